"""`modelyard serve`, as a real process on 127.0.0.1: the abalone inference pipeline answers raw
rows in every MLflow format with the predictions the package gives in Python; bad requests get a
4xx naming the field and never reach the model; /ping, /health, /metrics, /openapi.json; a
registry reference is served from the project; concurrent requests are batched."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard.testing.abalone import COLUMNS, Abalone, make_abalone
from modelyard.testing.serving import Server, start_server, stop

pytestmark = pytest.mark.filterwarnings("ignore:Operation with range is deprecated")


@pytest.fixture(scope="module")
def abalone(tmp_path_factory: pytest.TempPathFactory) -> Abalone:
    return make_abalone(tmp_path_factory.mktemp("abalone"))


@pytest.fixture(scope="module")
def package(abalone: Abalone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return abalone.package(tmp_path_factory.mktemp("packages") / "abalone-1").path


@pytest.fixture(scope="module")
def server(package: Path) -> Iterator[Server]:
    running = start_server(str(package))
    yield running
    stop(running)


@pytest.fixture(scope="module")
def expected(abalone: Abalone, package: Path) -> np.ndarray:
    import mlflow.pyfunc

    return np.asarray(mlflow.pyfunc.load_model(str(package)).predict(abalone.frame))


def test_it_serves_the_package_natively_and_says_so(server: Server) -> None:
    assert server.name == "abalone-1"
    assert server.predictor.startswith("native")


def test_a_raw_row_gets_the_prediction_of_the_package_loaded_in_python(
    server: Server, abalone: Abalone, expected: np.ndarray
) -> None:
    first = abalone.frame.iloc[0].tolist()
    response = server.post({"dataframe_split": {"columns": COLUMNS, "data": [first]}})
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert prediction == pytest.approx(float(expected[0]), rel=1e-6)


def test_every_mlflow_format_gives_the_same_predictions(
    server: Server, abalone: Abalone, expected: np.ndarray
) -> None:
    frame = abalone.frame
    records = frame.to_dict(orient="records")
    bodies: list[tuple[Any, str]] = [
        ({"dataframe_split": frame.to_dict(orient="split")}, "application/json"),
        ({"dataframe_records": records}, "application/json"),
        ({"instances": records}, "application/json"),
        ({"instances": frame.values.tolist()}, "application/json"),
        ({"inputs": frame.to_dict(orient="list")}, "application/json"),
        (frame.to_csv(index=False), "text/csv"),
    ]
    for body, content_type in bodies:
        response = server.post(body, content_type)
        assert response.status_code == 200, (content_type, response.text)
        assert np.allclose(response.json()["predictions"], expected, rtol=1e-6)


def test_a_missing_column_is_a_4xx_naming_it_and_the_model_is_not_called(
    server: Server, abalone: Abalone
) -> None:
    before = httpx.get(server.url + "/health").json()["batches"]
    record = abalone.frame.iloc[0].to_dict()
    del record["shell_weight"]
    response = server.post({"dataframe_records": [record]})
    assert response.status_code == 422
    error = response.json()
    assert error["field"] == "shell_weight" and "shell_weight" in error["message"]
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    wrong = server.post({"dataframe_records": [{**record, "shell_weight": 0.1, "length": "long"}]})
    assert wrong.status_code == 422 and wrong.json()["field"] == "length"
    garbage = server.post(b"{not json")
    assert garbage.status_code == 400
    assert server.post({"dataframe_records": []}).status_code == 400
    assert server.post(b"x", "application/xml").status_code == 415
    assert httpx.get(server.url + "/health").json()["batches"] == before  # no model call


def test_ping_health_openapi_and_metrics(server: Server) -> None:
    assert httpx.get(server.url + "/ping").status_code == 200
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["inputs"] == COLUMNS
    document = httpx.get(server.url + "/openapi.json").json()
    record = document["components"]["schemas"]["InputRecord"]
    assert set(record["required"]) == set(COLUMNS)
    assert record["properties"]["sex"]["type"] == "string"
    assert "/invocations" in document["paths"]
    metrics = httpx.get(server.url + "/metrics").text
    assert re.search(r'modelyard_requests_total\{status="200",variant="default"\} \d', metrics)
    assert re.search(r'modelyard_requests_total\{status="422",variant="default"\} \d', metrics)
    assert "modelyard_request_seconds_bucket" in metrics
    assert httpx.get(server.url + "/nope").status_code == 404
    assert httpx.get(server.url + "/invocations").status_code == 405
    from importlib.metadata import version

    assert httpx.get(server.url + "/version").text == version("modelyard")


def test_concurrent_requests_are_predicted_in_batches(
    server: Server, abalone: Abalone, expected: np.ndarray
) -> None:
    rows = abalone.frame.values.tolist()
    before = httpx.get(server.url + "/health").json()

    def one(i: int) -> float:
        body = {"dataframe_split": {"columns": COLUMNS, "data": [rows[i % len(rows)]]}}
        with httpx.Client() as client:
            response = client.post(server.url + "/invocations", json=body)
        assert response.status_code == 200
        return float(response.json()["predictions"][0])

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(400)))
    assert np.allclose(got, [expected[i % len(rows)] for i in range(400)], rtol=1e-6)
    after = httpx.get(server.url + "/health").json()
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == 400
    assert batches < requests  # some requests shared a model call


def test_a_registry_reference_is_served_from_the_project(
    abalone: Abalone, package: Path, tmp_path: Path
) -> None:
    from modelyard.engine.runtime import Runtime
    from modelyard.registry.service import Candidate, record_version
    from modelyard.settings import Settings

    root = tmp_path / "shop"
    root.mkdir()
    (root / "modelyard.yaml").write_text("name: shop\npipelines: {}\n")
    runtime = Runtime(Settings.resolve(root, {}))
    stored = runtime.store.put_path(package)
    with runtime.db.begin() as conn:
        from modelyard.store import runs as db

        db.record_artifacts(conn, [stored.to_json()])
        record_version(
            conn,
            Candidate(
                project="shop",
                model="abalone",
                description="",
                package_digest=stored.digest,
                package_size=stored.size,
                flavor="python_function",
                signature=None,
                metrics={},
                params={},
                lineage={},
                tags={},
                approval_status="approved",
                rules=(),
                alias="champion",
                actor="test",
                run_id=None,
            ),
        )
    runtime.close()
    served = start_server("abalone@champion", cwd=root)
    try:
        assert served.name == "abalone/1"
        first = abalone.frame.iloc[:1].to_dict(orient="split")
        response = served.post({"dataframe_split": first})
        assert response.status_code == 200
        assert response.json()["predictions"][0] == pytest.approx(float(abalone.expected()[0]))
    finally:
        stop(served)
    # the package was written to the state folder (verified against its digest) for reuse
    [written] = (root / ".modelyard" / "serving").iterdir()
    assert written.name == stored.digest.replace(":", "-")
    assert (written / "MLmodel").is_file()


def test_an_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "modelyard.yaml").write_text("name: shop\npipelines: {}\n")
    done = subprocess.run(
        [sys.executable, "-m", "modelyard", "serve", "nope@champion", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert "nope" in done.stderr and "Traceback" not in done.stderr


def _announcement(process: subprocess.Popen[str], timeout: float = 60) -> re.Match[str]:
    """The server's "serving ... on ..." line, read in a thread so a silent server fails the test
    after `timeout` instead of hanging it."""
    import queue
    import threading

    from modelyard.testing.serving import READY

    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no announcement: " + "".join(seen)) from None
        seen.append(line)
        found = READY.search(line)
        if found:
            return found
        assert process.poll() is None, "the server exited: " + "".join(seen)


def test_it_serves_on_an_inherited_socket_with_a_variant_and_a_name(package: Path) -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelyard",
            "serve",
            str(package),
            "--fd",
            str(listener.fileno()),
            "--variant",
            "blue",
            "--name",
            "abalone/7",
        ],
        pass_fds=(listener.fileno(),),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    listener.close()  # the server has its own copy
    try:
        found = _announcement(process)
        assert found[1] == "abalone/7"
        assert found[2] == f"http://127.0.0.1:{port}"  # the inherited socket's real address
        url = found[2]
        health = httpx.get(url + "/health").json()
        assert health["variant"] == "blue" and health["model"] == "abalone/7"
        body = {"dataframe_split": {"columns": COLUMNS, "data": [["M", 0.5] + [0.1] * 6]}}
        assert httpx.post(url + "/invocations", json=body).status_code == 200
        metrics = httpx.get(url + "/metrics").text
        assert re.search(r'modelyard_requests_total\{status="200",variant="blue"\} 1\.0', metrics)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_fd_that_is_not_a_listening_socket_is_a_clear_error(package: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelyard", "serve", str(package), "--fd", "0"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "file descriptor 0 is not an open socket" in done.stderr
    assert "Traceback" not in done.stderr


PARENT = """
import subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-m", "modelyard", "serve", sys.argv[1], "--port", "0", "--exit-with-parent"],
    stdout=subprocess.PIPE, text=True,
)
for line in child.stdout:
    if line.startswith("serving "):
        print(child.pid, flush=True)
        break
else:
    sys.exit("the server did not start")  # the test then reads EOF, not a pid
sys.stdin.read()  # until killed
"""


def test_with_exit_with_parent_it_stops_when_its_parent_is_killed(package: Path) -> None:
    import os
    import signal
    import time

    import psutil

    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(package)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), "the server did not start"
        server = psutil.Process(int(line))
        assert server.ppid() == parent.pid and server.is_running()
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5  # it looks at its parent about once a second
    while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the server outlived its parent"
        time.sleep(0.05)


def test_exit_with_parent_naming_a_parent_already_gone_stops_at_once(package: Path) -> None:
    # pid 1 is not this server's parent: as if the parent had died before the server started
    command = ["modelyard", "serve", str(package), "--port", "0", "--exit-with-parent=1"]
    done = subprocess.run(
        [sys.executable, "-m", *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "serving abalone-1 on http://127.0.0.1:" in done.stdout


def scaled_model(folder: Path) -> Path:
    """A pyfunc package predicting `x * 2 * scale`, with `scale` in its params schema."""
    from modelyard.testing.registry import TIMES_K_MODEL_STEP

    subprocess.run([sys.executable, "-c", TIMES_K_MODEL_STEP, str(folder), "2"], check=True)
    code = folder / "code" / "times_k.py"
    code.write_text(
        code.read_text().replace(
            "return frame['x'].astype(float) * float(self.k)",
            "return frame['x'].astype(float) * float(self.k) * (params or {}).get('scale', 1.0)",
        )
    )
    mlmodel = folder / "MLmodel"
    schema = '[{"name": "scale", "type": "double", "default": 1.0, "shape": null}]'
    mlmodel.write_text(mlmodel.read_text().replace("params: null", f"params: '{schema}'"))
    return folder


def test_request_params_reach_a_model_with_a_params_schema(tmp_path: Path) -> None:
    server = start_server(str(scaled_model(tmp_path / "scaled")))
    try:
        data = {"columns": ["x"], "data": [[1.5]]}
        plain = server.post({"dataframe_split": data})
        assert plain.json() == {"predictions": [3.0]}  # the schema's default scale, 1
        scaled = server.post({"dataframe_split": data, "params": {"scale": 10}})
        assert scaled.status_code == 200 and scaled.json() == {"predictions": [30.0]}
        wrong = server.post({"dataframe_split": data, "params": {"scale": "big"}})
        assert wrong.status_code == 422 and "scale" in wrong.json()["message"]
    finally:
        stop(server)
