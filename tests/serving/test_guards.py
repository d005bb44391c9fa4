"""Guards of the model server: the allow-list, API keys (never logged), throttling with
Retry-After, overload shedding and request timeouts; the token bucket on a fake clock; and a
real server process started with keys and an allow-list."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard.errors import ConfigError
from modelyard.serving.app import ModelServer, ServedModel, ServingOptions
from modelyard.serving.guards import GuardOptions, Guards, TokenBucket
from modelyard.serving.signature import ColumnSpec, InputSchema
from modelyard.testing.registry import TIMES_K_MODEL_STEP
from modelyard.testing.serving import start_server, stop

KEY = "k3y-for-tests-0123456789abcdef"
BODY = {"dataframe_split": {"columns": ["x"], "data": [[1.5]]}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Doubler:
    kind = "test:doubler"
    columns = ("x",)

    def predict(self, columns: Mapping[str, Sequence[Any]], rows: int) -> np.ndarray:
        return np.asarray(columns["x"], dtype=float) * 2

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


def app(guards: GuardOptions, options: ServingOptions | None = None) -> ModelServer:
    schema = InputSchema((ColumnSpec("x", "double"),))
    served = ServedModel("doubler", Doubler(), schema)  # type: ignore[arg-type]
    return ModelServer(served, options, guards)


async def call(
    server: ModelServer,
    client: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    path: str = "/invocations",
    count: int = 1,
) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=server, client=(client, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as http:
        if path == "/invocations":
            requests = [http.post(path, json=BODY, headers=headers) for _ in range(count)]
        else:
            requests = [http.get(path, headers=headers) for _ in range(count)]
        return list(await asyncio.gather(*requests))


def one(server: ModelServer, **kwargs: Any) -> httpx.Response:
    [response] = asyncio.run(call(server, **kwargs))
    return response


def test_a_client_outside_the_allow_list_is_refused_whatever_it_sends() -> None:
    server = app(GuardOptions.build(allow=["10.0.0.0/8"], keys=[KEY]))
    refused = one(server, client="127.0.0.1", headers={"x-api-key": KEY})
    assert refused.status_code == 403 and refused.json()["error_code"] == "FORBIDDEN"
    assert one(server, client="10.1.2.3", headers={"x-api-key": KEY}).status_code == 200
    assert one(server, client="10.1.2.3", path="/ping").status_code == 200
    assert one(server, client="192.168.1.1", path="/ping").status_code == 403


def test_a_request_without_a_valid_key_is_refused_and_ping_needs_none() -> None:
    server = app(GuardOptions.build(keys=[KEY, "another-key-of-sixteen+"]))
    missing = one(server)
    assert missing.status_code == 401 and "API key is required" in missing.json()["message"]
    wrong = one(server, headers={"authorization": "Bearer not-the-key-at-all"})
    assert wrong.status_code == 401 and wrong.json()["message"] == "the API key is not valid"
    assert "not-the-key" not in wrong.text
    ok = one(server, headers={"authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json() == {"predictions": [3.0]}
    assert one(server, headers={"x-api-key": "another-key-of-sixteen+"}).status_code == 200
    assert one(server, path="/ping").status_code == 200
    assert one(server, path="/health").status_code == 401
    assert KEY not in one(server, path="/health", headers={"x-api-key": KEY}).text


def test_a_flood_gets_429_with_retry_after_and_clients_have_their_own_buckets() -> None:
    server = app(GuardOptions.build(rate=2, burst=3))
    responses = asyncio.run(call(server, count=10))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [429] * 7  # the burst, then the bucket is empty
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert one(server, client="127.0.0.2").status_code == 200  # another client, another bucket
    metrics = one(server, path="/metrics").text
    assert 'modelyard_requests_total{status="429",variant="default"} 7.0' in metrics


def test_the_token_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=0.5, burst=2, clock=clock)
    assert bucket.take() == 0 and bucket.take() == 0
    assert bucket.take() == pytest.approx(2.0)  # one token takes 2 s at 0.5/s
    clock.now += 1.0
    assert bucket.take() == pytest.approx(1.0)
    clock.now += 1.0
    assert bucket.take() == 0
    clock.now += 100
    assert [bucket.take() for _ in range(3)][:2] == [0, 0]  # never more than the burst


def test_guards_with_a_fake_clock_refuse_then_admit_again() -> None:
    clock = FakeClock()
    guards = Guards(GuardOptions.build(rate=1, burst=1), clock=clock)
    assert guards.check("1.2.3.4", "/invocations", []) is None
    refusal = guards.check("1.2.3.4", "/invocations", [])
    assert refusal is not None and refusal.status == 429 and refusal.retry_after == 1
    clock.now += 1.0
    assert guards.check("1.2.3.4", "/invocations", []) is None


def test_over_max_in_flight_requests_are_shed_with_503() -> None:
    guards = Guards(GuardOptions.build(max_in_flight=2))
    guards.in_flight = 2  # two requests being served
    refusal = guards.check("127.0.0.1", "/invocations", [])
    assert refusal is not None and (refusal.status, refusal.retry_after) == (503, 1)
    guards.in_flight = 1
    assert guards.check("127.0.0.1", "/invocations", []) is None


def test_a_request_waiting_past_its_timeout_gets_504() -> None:
    # the batcher holds requests for up to 60 s to batch them: far past the 50 ms timeout
    server = app(GuardOptions.build(timeout=0.05), ServingOptions(max_wait=60.0))
    response = one(server)
    assert response.status_code == 504 and response.json()["error_code"] == "TIMEOUT"
    assert server.guards.in_flight == 0


def test_bad_guard_settings_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="shorter than 16"):
        GuardOptions.build(keys=["short"])
    with pytest.raises(ConfigError, match="not an IP network"):
        GuardOptions.build(allow=["10.0.0.300/8"])
    with pytest.raises(ConfigError, match="rate"):
        GuardOptions.build(rate=0)
    with pytest.raises(ConfigError, match="burst"):
        GuardOptions.build(rate=1, burst=0)


def test_a_real_server_with_keys_refuses_without_one_and_never_prints_a_key(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "model"  # a pyfunc package predicting 2 * x, written without MLflow
    subprocess.run([sys.executable, "-c", TIMES_K_MODEL_STEP, str(folder), "2"], check=True)
    os.environ["TEST_SERVE_KEYS"] = KEY
    try:
        server = start_server(
            str(folder), "--api-keys-env", "TEST_SERVE_KEYS", "--allow", "127.0.0.1/32"
        )
    finally:
        del os.environ["TEST_SERVE_KEYS"]
    try:
        assert server.post(BODY).status_code == 401
        response = httpx.post(server.url + "/invocations", json=BODY, headers={"x-api-key": KEY})
        assert response.status_code == 200 and response.json()["predictions"] == [3.0]
        assert (
            httpx.post(
                server.url + "/invocations", json=BODY, headers={"x-api-key": KEY[::-1]}
            ).status_code
            == 401
        )
    finally:
        stop(server)
    output = server.process.stdout.read() if server.process.stdout else ""
    printed = "".join(list(server.lines.queue)) + (output or "")
    assert KEY not in printed and KEY[::-1] not in printed


def test_keys_are_read_from_the_environment_or_a_file_never_from_arguments(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelyard", "serve", str(tmp_path), "--api-keys-env", "NOPE_X"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "NOPE_X"},
        timeout=60,
    )
    assert done.returncode != 0
    assert "NOPE_X" in done.stderr and "Traceback" not in done.stderr
