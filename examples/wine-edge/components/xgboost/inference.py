"""Component com.ml.xgboost: predicts wine quality for requests on a local pub/sub topic.

Started by the agent as ``python3 -u {artifacts:path}/inference.py``; it loads the booster from
``model.json`` next to this file, subscribes to ``local/inference`` and answers every request on
``local/result``. A request is scenario S3's message::

    {"body": "<JSON list of records>", "isBase64Encoded": false}

where each record holds the 11 wine measurements and ``color_red``/``color_white`` by name (the
names the model was trained with, read from ``model.json``; other keys are ignored). The answer is
the list of predictions, in the records' order. A bad request is logged and answered with
``{"error": "<what is wrong>"}``; the component keeps serving.

It also acknowledges the deployment notices it gets (a deployment with NOTIFY_COMPONENTS waits
for them): a request is answered before the notice is read, so none is cut off by an update.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    from modelyard.edge import ipc
except ImportError:  # python3 is not the interpreter modelyard is installed in
    sys.exit(
        "com.ml.xgboost: cannot import modelyard.edge.ipc; run the agent with the python3 of "
        "modelyard's environment first on PATH (source .venv/bin/activate)"
    )

REQUEST_TOPIC = "local/inference"
RESULT_TOPIC = "local/result"
MAX_RECORDS = 10_000  # one message; bigger batches go in several requests
# what the model takes when model.json carries no feature names (steps/wine_io.MODEL_COLUMNS)
DEFAULT_FEATURES = (
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
    "color_red",
    "color_white",
)

log = logging.getLogger("com.ml.xgboost")

Predict = Callable[[np.ndarray], Sequence[float]]  # rows of the features -> predictions


class RequestError(ValueError):
    """A request the component cannot answer; the message says what is wrong with it."""


def parse_request(message: Any) -> list[dict[str, Any]]:
    """The records of a request message (see the module docstring)."""
    if isinstance(message, bytes):  # a binary message: the same JSON, as bytes
        try:
            message = json.loads(message)
        except ValueError:
            raise RequestError("a binary message must be the request's JSON") from None
    if not isinstance(message, dict) or "body" not in message:
        found = "an object without 'body'" if isinstance(message, dict) else _kind(message)
        raise RequestError(
            f'expected {{"body": "<JSON records>", "isBase64Encoded": false}}, got {found}'
        )
    body, encoded = message["body"], message.get("isBase64Encoded", False)
    if not isinstance(encoded, bool):
        raise RequestError(f"isBase64Encoded must be true or false, got {_kind(encoded)}")
    if not isinstance(body, str):
        raise RequestError(f"body must be a string of JSON records, got {_kind(body)}")
    if encoded:
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise RequestError(
                "body is not base64 of UTF-8 text (isBase64Encoded is true)"
            ) from None
    try:
        records = json.loads(body)
    except ValueError as exc:
        raise RequestError(f"body is not JSON: {exc}") from None
    if not isinstance(records, list) or not records:
        raise RequestError(f"body must be a non-empty JSON list of records, got {_kind(records)}")
    if len(records) > MAX_RECORDS:
        raise RequestError(f"{len(records)} records in one request; at most {MAX_RECORDS}")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RequestError(
                f"record {i} must be an object of feature values, got {_kind(record)}"
            )
    return records


def to_matrix(records: Sequence[dict[str, Any]], features: Sequence[str]) -> np.ndarray:
    """The records' values in the model's feature order, one row each."""
    rows = []
    for i, record in enumerate(records):
        missing = [name for name in features if name not in record]
        if missing:
            raise RequestError(f"record {i} lacks {', '.join(map(repr, missing))}")
        row = []
        for name in features:
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestError(f"record {i}: {name!r} must be a number, got {_kind(value)}")
            if not math.isfinite(value):
                raise RequestError(f"record {i}: {name!r} must be finite, got {value}")
            row.append(float(value))
        rows.append(row)
    return np.asarray(rows, dtype=float)


def handle(message: Any, predict: Predict, features: Sequence[str]) -> list[float] | dict[str, str]:
    """The answer to one request: the predictions, or ``{"error": ...}``."""
    try:
        matrix = to_matrix(parse_request(message), features)
    except RequestError as exc:
        log.error("bad request: %s", exc)
        return {"error": str(exc)}
    try:
        predictions = [float(p) for p in predict(matrix)]
    except Exception as exc:  # a model failure must not end the component
        log.error("prediction failed: %s", exc)
        return {"error": f"prediction failed: {exc}"}
    log.info("predicted %d records: %s", len(predictions), json.dumps(predictions))
    return predictions


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def load_model(path: Path) -> tuple[Predict, tuple[str, ...]]:
    """The booster's predict function and its feature names."""
    import xgboost as xgb  # here, so the message handling above needs only numpy

    booster = xgb.Booster()
    booster.load_model(str(path))
    features = tuple(booster.feature_names or DEFAULT_FEATURES)

    def predict(matrix: np.ndarray) -> Sequence[float]:
        result = booster.predict(xgb.DMatrix(matrix, feature_names=list(features)))
        return [float(value) for value in result]

    return predict, features


def serve(model: Path, requests: str, results: str) -> int:
    try:
        predict, features = load_model(model)
    except Exception as exc:  # missing or broken model.json: one clear line, no traceback
        log.error(
            "cannot load the model %s: %s", model, (str(exc).strip().splitlines() or [repr(exc)])[0]
        )
        return 1
    log.info("loaded %s: %d features (%s)", model, len(features), ", ".join(features))
    stop = threading.Event()

    with ipc.connect() as client:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # the agent stops us with SIGTERM

        def on_request(topic: str, message: Any) -> None:
            answer = handle(message, predict, features)
            try:
                client.publish(results, answer)
            except ipc.IpcError as exc:
                log.error("cannot publish to %s: %s", results, exc)

        def on_update(update: ipc.ComponentUpdate) -> None:
            if update.phase == "pre":
                client.acknowledge_component_update(update.deployment_id)
                log.info("deployment %s: update acknowledged", update.deployment_id)
            else:
                log.info("deployment %s: update done", update.deployment_id)

        client.subscribe(requests, on_request)
        client.subscribe_to_component_updates(on_update)
        log.info("subscribed to %s; answering on %s", requests, results)
        stop.wait()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--model", type=Path, default=here / "model.json")
    parser.add_argument("--requests", default=REQUEST_TOPIC, help="topic of the requests")
    parser.add_argument("--results", default=RESULT_TOPIC, help="topic of the answers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
    try:
        return serve(args.model, args.requests, args.results)
    except ipc.IpcError as exc:  # no agent, or it refused us: say so, exit non-zero
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
