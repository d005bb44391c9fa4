"""Component com.ml.consumer: asks com.ml.xgboost for predictions every few seconds and logs them.

Started by the agent as ``python3 -u {artifacts:path}/consumer.py --interval
{configuration:/interval}``. Every ``--interval`` seconds it publishes the records of
``samples.json`` (next to this file) to ``local/inference`` as scenario S3's request,
``{"body": "<JSON records>", "isBase64Encoded": false}``, and logs ``request: <message>``; each
answer on ``local/result`` is logged as ``result: [<predictions>]`` (or ``result error: ...``).

Like the inference component, it acknowledges deployment notices at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    from modelyard.edge import ipc
except ImportError:  # python3 is not the interpreter modelyard is installed in
    sys.exit(
        "com.ml.consumer: cannot import modelyard.edge.ipc; run the agent with the python3 of "
        "modelyard's environment first on PATH (source .venv/bin/activate)"
    )

REQUEST_TOPIC = "local/inference"
RESULT_TOPIC = "local/result"

log = logging.getLogger("com.ml.consumer")


class SamplesError(ValueError):
    """samples.json is missing or not a list of records."""


def load_samples(path: Path) -> list[dict[str, Any]]:
    try:
        samples = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SamplesError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SamplesError(f"{path} is not JSON: {exc}") from None
    if (
        not isinstance(samples, list)
        or not samples
        or not all(isinstance(r, dict) for r in samples)
    ):
        raise SamplesError(f"{path} must hold a non-empty JSON list of records (objects)")
    return samples


def build_request(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Scenario S3's request message: the records as a JSON string in ``body``."""
    return {"body": json.dumps(list(samples)), "isBase64Encoded": False}


def describe_result(message: Any) -> str:
    """The log line for an answer on the result topic."""
    if isinstance(message, dict) and "error" in message:
        return f"result error: {message['error']}"
    if isinstance(message, bytes):
        return f"result (binary, {len(message)} bytes)"
    return f"result: {json.dumps(message)}"


def interval(text: str) -> float:
    """argparse type: seconds between requests, more than 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(text)
    return value


def run(samples_path: Path, every: float, requests: str, results: str) -> int:
    try:
        samples = load_samples(samples_path)
    except SamplesError as exc:
        log.error("%s", exc)
        return 1
    request = build_request(samples)
    stop = threading.Event()

    with ipc.connect() as client:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # the agent stops us with SIGTERM

        def on_update(update: ipc.ComponentUpdate) -> None:
            if update.phase == "pre":
                client.acknowledge_component_update(update.deployment_id)
                log.info("deployment %s: update acknowledged", update.deployment_id)

        client.subscribe(results, lambda topic, message: log.info("%s", describe_result(message)))
        client.subscribe_to_component_updates(on_update)
        log.info("%d samples; a request to %s every %gs", len(samples), requests, every)
        while not stop.is_set():
            log.info("request: %s", json.dumps(request))  # before: the answer may come at once
            try:
                client.publish(requests, request)
            except ipc.UnauthorizedError as exc:
                log.error("not allowed to publish to %s: %s", requests, exc)
            stop.wait(every)
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--samples", type=Path, default=here / "samples.json")
    parser.add_argument("--interval", type=interval, default=5.0, help="seconds between requests")
    parser.add_argument("--requests", default=REQUEST_TOPIC, help="topic of the requests")
    parser.add_argument("--results", default=RESULT_TOPIC, help="topic of the answers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
    try:
        return run(args.samples, args.interval, args.requests, args.results)
    except ipc.IpcError as exc:  # no agent, or the connection is gone: the agent restarts us
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
