"""Scenario S3 end to end, as its README tells a new user: the wine-edge example trains its
XGBoost regressor and bundles the two Greengrass components (`modelyard run train`), the bundle
is written out (`modelyard outputs RUN bundle bundle --dest`), a real agent process runs them
(`python -m modelyard.edge.agent run`), a deployment with NOTIFY_COMPONENTS (60 s) and ROLLBACK
installs and starts both, the consumer's log shows `result:` lines whose predictions are the
trained model's own (`expected.json`), a second deployment removes the consumer, and when the
agent stops no process of it is left.

Component processes are real: `python3 -u .../inference.py` and `.../consumer.py`, found on the
PATH as the README's `source .venv/bin/activate` would put it, talking over the agent's socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from modelyard.cli.main import main

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "wine-edge"
AGENT = [sys.executable, "-m", "modelyard.edge.agent"]
XGBOOST, CONSUMER = "com.ml.xgboost", "com.ml.consumer"

pytestmark = pytest.mark.slow


def wait_for(predicate: Callable[[], T], what: str, timeout: float) -> T:
    """Poll ``predicate`` until it returns something true, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example outside any git repository, without earlier state."""
    for name in list(os.environ):
        if name.startswith("MODELYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODELYARD_TRACKING_AUTO_PUSH", "0")  # no detached MLflow pusher
    root = tmp_path / "wine-edge"
    ignore = shutil.ignore_patterns(".modelyard", "__pycache__", "bundle", ".agent")
    shutil.copytree(EXAMPLE, root, ignore=ignore)
    return root


class Device:
    """An agent process on a root folder, with the venv's python3 first on its PATH."""

    def __init__(self, root: Path, output: Path) -> None:
        self.root = root
        self.output = output
        venv_bin = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                [*AGENT, "run", "--root", str(self.root), "--health-window", "2"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # its own group: the test can clean up after a failure
            )
        wait_for(self._running, "the agent to start", 30)

    def _running(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the agent exited with {self.proc.returncode}:\n{self.log()}")
        listing = self.cli("components", "--json")  # exit 3 until the agent made its root
        return listing.returncode == 0 and bool(json.loads(listing.stdout)["agentRunning"])

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # only the group this test started
            self.proc.wait(timeout=10)
            raise AssertionError(f"the agent did not stop on SIGTERM:\n{self.log()}") from None

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def cli(self, command: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AGENT, command, "--root", str(self.root), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=180,
            env=self.env,
        )

    def deploy(self, *args: str | Path) -> dict[str, Any]:
        result = self.cli(
            "deploy", *args, "--notify-timeout", "60", "--failure-policy", "ROLLBACK",
            "--wait", "--timeout", "150", "--json",
        )  # fmt: skip
        assert result.returncode == 0, (
            f"deploy exited {result.returncode}\n{result.stdout}\n{result.stderr}\n"
            f"--- agent ---\n{self.log()}"
        )
        summary: dict[str, Any] = json.loads(result.stdout)
        return summary

    def components_listing(self) -> dict[str, Any]:
        result = self.cli("components", "--json")
        assert result.returncode == 0, result.stderr
        listing: dict[str, Any] = json.loads(result.stdout)
        return listing

    def states(self) -> dict[str, tuple[str, str]]:
        return {
            c["name"]: (c["version"], c["state"]) for c in self.components_listing()["components"]
        }

    def component_log(self, name: str) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def processes(self, script: str = "") -> list[psutil.Process]:
        """Live processes started for this root whose command line mentions ``script``."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                command = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if str(self.root) in command and script in command:
                found.append(proc)
        return found


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    device = Device((tmp_path / "agent-root").resolve(), tmp_path / "agent.out")
    yield device
    if device.proc is not None and device.proc.poll() is None:
        device.stop()


def cli(capsys: pytest.CaptureFixture[str], project: Path, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--project", str(project), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def result_lines(log: str) -> list[list[float]]:
    """The predictions of each `result: [...]` line of the consumer's log."""
    found = []
    for line in log.splitlines():
        _, marker, rest = line.partition("] INFO result: ")
        if marker:
            found.append(json.loads(rest))
    return found


def test_train_bundle_deploy_predict_remove(
    example: Path, device: Device, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # 1. the pipeline: prepare -> train -> evaluate -> bundle
    code, out = cli(capsys, example, "run", "train", "--quiet", "-p", "num_round=60")
    assert code == 0, out
    assert "run 1 succeeded" in out
    code, out = cli(capsys, example, "show", "1")
    assert code == 0 and "rmse=" in out and "mae=" in out, out

    bundle = tmp_path / "bundle"
    code, out = cli(capsys, example, "outputs", "1", "bundle", "bundle", "--dest", str(bundle))
    assert code == 0, out
    expected = json.loads((bundle / "expected.json").read_text())
    samples = json.loads((bundle / "samples.json").read_text())
    assert len(expected) == len(samples) == 5

    # 2. the device: an agent, and both components deployed with S3's policies
    device.start()
    first = device.deploy(
        "--recipe-dir", bundle / "recipes", "--artifact-dir", bundle / "artifacts",
        "--merge", f"{XGBOOST}=1.0.0", "--merge", f"{CONSUMER}=1.0.0",
    )  # fmt: skip
    assert first["status"] == "SUCCEEDED", first
    assert device.states() == {XGBOOST: ("1.0.0", "RUNNING"), CONSUMER: ("1.0.0", "RUNNING")}
    assert len(device.processes("inference.py")) >= 1
    assert len(device.processes("consumer.py")) >= 1

    # 3. the consumer asks, the XGBoost component answers with the model's own predictions
    results = wait_for(
        lambda: result_lines(device.component_log(CONSUMER)),
        "a result: line in the consumer's log",
        60,
    )
    assert results[0] == pytest.approx(expected, abs=1e-6)
    consumer_log = device.component_log(CONSUMER)
    request = next(line for line in consumer_log.splitlines() if "INFO request: " in line)
    message = json.loads(request.partition("INFO request: ")[2])
    assert message["isBase64Encoded"] is False
    assert json.loads(message["body"]) == samples
    assert "predicted 5 records" in device.component_log(XGBOOST)
    shown = device.cli("logs", CONSUMER)
    assert shown.returncode == 0 and "result: [" in shown.stdout

    # 4. removing a component takes a new deployment without it
    second = device.deploy("--remove", CONSUMER)
    assert second["status"] == "SUCCEEDED", second
    assert device.states() == {XGBOOST: ("1.0.0", "RUNNING")}
    wait_for(lambda: not device.processes("consumer.py"), "the consumer's process to end", 30)
    assert device.processes("inference.py")
    # the components were told before the update (NOTIFY_COMPONENTS) and acknowledged it
    acknowledged = f"deployment {second['deploymentId']}: update acknowledged"
    assert acknowledged in device.component_log(CONSUMER)
    listed = device.cli("deployments", "--json")
    assert [d["status"] for d in json.loads(listed.stdout)] == ["SUCCEEDED", "SUCCEEDED"]

    # 5. stopping the agent stops everything it started
    assert device.stop() == 0
    wait_for(lambda: not device.processes(), "every process of the device to end", 30)
    assert "[run:stdout] INFO stopped" in device.component_log(XGBOOST)  # its SIGTERM handler
