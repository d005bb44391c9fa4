"""The components' message handling, without an agent: what com.ml.xgboost makes of a request
(S3's `{"body": "<JSON records>", "isBase64Encoded": false}`), how it answers bad ones, and the
requests and log lines of com.ml.consumer."""

from __future__ import annotations

import base64
import importlib
import json
import math
from types import ModuleType

import numpy as np
import pytest

# what the model takes, as the steps define it (the conftest puts steps/ on sys.path)
FEATURES: tuple[str, ...] = importlib.import_module("wine_io").MODEL_COLUMNS
VALUES = [7.4, 0.7, 0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4, 1, 0]
RECORD = dict(zip(FEATURES, VALUES, strict=True))


def request(records: object, *, encoded: bool = False) -> dict[str, object]:
    body = json.dumps(records)
    if encoded:
        body = base64.b64encode(body.encode()).decode()
    return {"body": body, "isBase64Encoded": encoded}


def row_sums(matrix: np.ndarray) -> list[float]:
    """A fake model: each row's sum, so a test can tell which values went in, in which order."""
    return [float(x) for x in matrix.sum(axis=1)]


def weighted(matrix: np.ndarray) -> list[float]:
    """A fake model sensitive to the column order."""
    return [float(x) for x in matrix @ np.arange(1, matrix.shape[1] + 1)]


def test_records_go_in_the_model_feature_order_whatever_their_key_order(inference: ModuleType):
    shuffled = dict(reversed(list(RECORD.items())))
    shuffled["quality"] = 5  # extra keys (the label, an id) are ignored
    second = {**RECORD, "alcohol": 12.5, "color_red": 0, "color_white": 1}
    answer = inference.handle(request([shuffled, second]), weighted, FEATURES)
    expected = [sum((i + 1) * float(RECORD[n]) for i, n in enumerate(FEATURES))]
    expected.append(expected[0] + 11 * (12.5 - 9.4) + 12 * (0 - 1) + 13 * (1 - 0))
    assert answer == pytest.approx(expected, abs=1e-9)


def test_base64_and_binary_messages(inference: ModuleType):
    assert inference.parse_request(request([RECORD], encoded=True)) == [RECORD]
    assert inference.parse_request(json.dumps(request([RECORD])).encode()) == [RECORD]
    # isBase64Encoded may be left out (false)
    assert inference.parse_request({"body": json.dumps([RECORD])}) == [RECORD]


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ([RECORD], 'expected {"body": "<JSON records>", "isBase64Encoded": false}, got a list'),
        ({"records": [RECORD]}, "got an object without 'body'"),
        ("hello", "got a string"),
        (b"\xff\x00", "a binary message must be the request's JSON"),
        ({"body": [RECORD], "isBase64Encoded": False}, "body must be a string"),
        ({"body": "[", "isBase64Encoded": False}, "body is not JSON"),
        ({"body": "[]", "isBase64Encoded": False}, "non-empty JSON list of records"),
        ({"body": "{}", "isBase64Encoded": False}, "non-empty JSON list of records"),
        ({"body": "[1, 2]", "isBase64Encoded": False}, "record 0 must be an object"),
        ({"body": "W10=", "isBase64Encoded": "yes"}, "isBase64Encoded must be true or false"),
        ({"body": "not base64!", "isBase64Encoded": True}, "body is not base64"),
        (request([{**RECORD, "pH": "3.5"}]), "record 0: 'pH' must be a number, got a string"),
        (request([{**RECORD, "color_red": True}]), "'color_red' must be a number, got a boolean"),
        (request([RECORD, {"alcohol": 9}]), "record 1 lacks 'fixed acidity', 'volatile acidity'"),
    ],
    ids=[
        "list", "no-body", "string", "binary-garbage", "body-not-string", "body-not-json",
        "empty", "object-body", "records-not-objects", "flag-not-bool", "bad-base64",
        "string-value", "bool-value", "missing-features",
    ],
)  # fmt: skip
def test_bad_requests_get_an_error_answer(inference: ModuleType, message, problem, caplog):
    calls: list[np.ndarray] = []

    def predict(matrix: np.ndarray) -> list[float]:
        calls.append(matrix)
        return row_sums(matrix)

    answer = inference.handle(message, predict, FEATURES)
    assert set(answer) == {"error"}
    assert problem in answer["error"]
    assert calls == []  # the model never saw it
    assert f"bad request: {answer['error']}" in caplog.text


def test_a_non_finite_value_is_refused(inference: ModuleType):
    record = {**RECORD, "density": math.nan}
    answer = inference.handle({"body": json.dumps([record])}, row_sums, FEATURES)
    assert answer == {"error": "record 0: 'density' must be finite, got nan"}


def test_a_model_failure_is_an_error_answer_not_a_crash(inference: ModuleType, caplog):
    def broken(matrix: np.ndarray) -> list[float]:
        raise RuntimeError("feature_names mismatch")

    answer = inference.handle(request([RECORD]), broken, FEATURES)
    assert answer == {"error": "prediction failed: feature_names mismatch"}
    assert "prediction failed" in caplog.text


def test_too_many_records(inference: ModuleType, monkeypatch):
    monkeypatch.setattr(inference, "MAX_RECORDS", 2)
    answer = inference.handle(request([RECORD] * 3), row_sums, FEATURES)
    assert answer == {"error": "3 records in one request; at most 2"}


def test_the_consumer_request_is_what_the_inference_side_reads(
    inference: ModuleType, consumer: ModuleType, tmp_path
):
    samples = [RECORD, {**RECORD, "alcohol": 11.0666666666667}]
    path = tmp_path / "samples.json"
    path.write_text(json.dumps(samples))
    message = consumer.build_request(consumer.load_samples(path))
    assert set(message) == {"body", "isBase64Encoded"} and message["isBase64Encoded"] is False
    assert isinstance(message["body"], str)
    # through the wire's JSON and back, values are the same floats
    assert inference.parse_request(json.loads(json.dumps(message))) == samples


def test_consumer_log_lines(consumer: ModuleType):
    assert consumer.describe_result([6.5, 5.25]) == "result: [6.5, 5.25]"
    assert consumer.describe_result({"error": "record 0 lacks 'pH'"}) == (
        "result error: record 0 lacks 'pH'"
    )
    assert consumer.describe_result(b"\x00\x01") == "result (binary, 2 bytes)"


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("[", "is not JSON"), ("[]", "non-empty JSON list"), ("[1]", "list")],
)
def test_consumer_samples_must_be_records(consumer: ModuleType, tmp_path, content, problem):
    path = tmp_path / "samples.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(consumer.SamplesError, match=problem):
        consumer.load_samples(path)


def test_consumer_interval_must_be_positive(consumer: ModuleType):
    assert consumer.interval("0.5") == 0.5
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(ValueError):
            consumer.interval(bad)


def test_without_an_agent_or_model_the_components_exit_1(
    inference: ModuleType, consumer: ModuleType, monkeypatch, tmp_path, caplog
):
    monkeypatch.delenv("SVCUID", raising=False)
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps([RECORD]))
    assert consumer.main(["--samples", str(samples)]) == 1
    assert "not running under a modelyard agent (SVCUID is not set)" in caplog.text
    assert inference.main(["--model", str(tmp_path / "missing.json")]) == 1
    assert f"cannot load the model {tmp_path / 'missing.json'}" in caplog.text


def test_the_components_own_feature_list_is_the_models(inference: ModuleType) -> None:
    # the component is deployed alone and cannot import the steps: its copy must not drift
    assert inference.DEFAULT_FEATURES == FEATURES
