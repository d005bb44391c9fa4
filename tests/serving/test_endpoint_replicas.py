"""Replica processes of an endpoint's variant, for real: `modelyard serve` children on sockets the
set bound, ready once /ping answers, restarted after kill -9, given up when they crash-loop or
are not ready in time, drained before SIGTERM on scale-in (highest slot first, slots reused),
all gone after stop_all or when their parent is killed -9; logs rotated."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from modelyard.errors import ConfigError, StateConflict
from modelyard.serving.endpoint.replicas import Replica, ReplicaSet, ReplicaSpec
from modelyard.testing.abalone import COLUMNS, Abalone, make_abalone

pytestmark = pytest.mark.filterwarnings("ignore:Operation with range is deprecated")


@pytest.fixture(scope="module")
def abalone(tmp_path_factory: pytest.TempPathFactory) -> Abalone:
    return make_abalone(tmp_path_factory.mktemp("abalone"))


@pytest.fixture(scope="module")
def package(abalone: Abalone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return abalone.package(tmp_path_factory.mktemp("packages") / "abalone-1").path


@pytest.fixture(scope="module")
def row(abalone: Abalone) -> list[object]:
    return list(abalone.frame.iloc[0].tolist())


def spec_for(folder: Path, tmp_path: Path, **extra: object) -> ReplicaSpec:
    return ReplicaSpec("shop", "blue", folder, "abalone/1", tmp_path / "logs", **extra)  # type: ignore[arg-type]


async def until(replicas: ReplicaSet, condition: Callable[[], bool], timeout: float = 30) -> None:
    """Tick the set as the supervisor does until `condition` holds, failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; replicas: {replicas.describe()}")
        await replicas.tick()
        await asyncio.sleep(0.05)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while running(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


async def no_drain(replica: Replica) -> None:
    return None


def predict(port: int, row: list[object]) -> float:
    body = {"dataframe_split": {"columns": COLUMNS, "data": [row]}}
    response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body)
    assert response.status_code == 200, response.text
    return float(response.json()["predictions"][0])


def test_two_replicas_serve_and_a_killed_one_is_restarted(
    package: Path, row: list[object], tmp_path: Path
) -> None:
    changes: list[list[str]] = []
    replicas: ReplicaSet

    def on_change() -> None:
        changes.append([r.state for r in replicas.replicas])

    replicas = ReplicaSet(spec_for(package, tmp_path), on_change=on_change, backoff=(0.1, 1.0))

    async def scenario() -> None:
        await replicas.scale_to(2, no_drain)
        # started at once, not waiting for readiness
        first, second = replicas.replicas
        assert (first.slot, second.slot) == (1, 2)
        assert first.state == second.state == "starting"
        assert first.pid and second.pid and first.port != second.port
        await until(replicas, lambda: len(replicas.ready()) == 2)
        assert ["ready", "ready"] in changes
        assert predict(first.port, row) == pytest.approx(predict(second.port, row))
        health = httpx.get(f"http://127.0.0.1:{second.port}/health").json()
        assert health["model"] == "abalone/1" and health["variant"] == "blue"
        log = (tmp_path / "logs" / "blue-2.log").read_text()
        assert f"serving abalone/1 on http://127.0.0.1:{second.port}" in log

        old_pid, old_port = first.pid, first.port
        os.kill(old_pid, signal.SIGKILL)
        await until(replicas, lambda: first.state == "ready" and first.pid != old_pid)
        assert first.restarts == 1 and first.last_exit == "killed by SIGKILL"
        assert not running(old_pid)
        assert predict(first.port, row) == pytest.approx(predict(second.port, row))
        [row1, row2] = replicas.describe()
        assert row1["restarts"] == 1 and row1["pid"] == first.pid and row1["port"] == first.port
        assert row2["restarts"] == 0 and row2["last_exit"] is None
        if first.port != old_port:  # a new socket: the old port no longer answers
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{old_port}/ping")

        pids = [r.pid for r in replicas.replicas]
        await replicas.stop_all()
        assert replicas.replicas == [] and replicas.describe() == []
        for pid in pids:
            assert pid is not None and not running(pid)
        with pytest.raises(StateConflict):
            await replicas.scale_to(1, no_drain)

    asyncio.run(scenario())


def test_scale_in_drains_the_highest_slot_before_sigterm_and_reuses_it(
    package: Path, tmp_path: Path
) -> None:
    events: list[tuple[object, ...]] = []
    replicas = ReplicaSet(spec_for(package, tmp_path))

    async def drain(replica: Replica) -> None:
        assert replica.pid is not None
        events.append(("drain", replica.slot, replica.state))
        # the replica still serves while being drained: the proxy's last requests finish
        reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
        writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status = await reader.readline()
        writer.close()
        events.append(("drained", replica.slot, status.split()[1], running(replica.pid)))

    async def scenario() -> None:
        await replicas.scale_to(2, drain)
        await until(replicas, lambda: len(replicas.ready()) == 2)
        first, second = replicas.replicas
        second_pid = second.pid
        assert second_pid is not None

        await replicas.scale_to(1, drain)
        assert events == [("drain", 2, "draining"), ("drained", 2, b"200", True)]
        # then it was stopped: it ended by SIGTERM (uvicorn re-raises it after a graceful exit)
        assert second.state == "stopped" and second.last_exit == "killed by SIGTERM"
        assert not running(second_pid)
        assert replicas.replicas == [first] and first.state == "ready" and first.pid
        assert running(first.pid)

        await replicas.scale_to(2, drain)  # the freed slot is reused
        assert [r.slot for r in replicas.replicas] == [1, 2]
        await until(replicas, lambda: len(replicas.ready()) == 2)
        pids = [r.pid for r in replicas.replicas]
        events.clear()
        await replicas.stop_all(drain)
        assert sorted(e[1] for e in events if e[0] == "drained") == [1, 2]
        assert all(e[2] == b"200" and e[3] for e in events if e[0] == "drained")
        for pid in pids:
            assert pid is not None and not running(pid)
        assert replicas.replicas == []

    asyncio.run(scenario())
    log = (tmp_path / "logs" / "blue-2.log").read_text()
    assert log.count("--- ") == 2  # one log per slot, appended across its replicas


def test_a_replica_that_keeps_dying_is_given_up_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "MLmodel").write_text("flavors: [\n")
    replicas = ReplicaSet(spec_for(broken, tmp_path), max_restarts=2, backoff=(0.05, 0.1))

    async def scenario() -> None:
        await replicas.scale_to(1, no_drain)
        await until(replicas, lambda: replicas.crashlooping is not None)
        [replica] = replicas.replicas
        assert replica.state == "failed" and replica.pid is None
        assert replica.restarts == 2 and replica.last_exit == "exit code 5"
        reason = replicas.crashlooping
        assert reason is not None
        assert "died 3 times within 300s" in reason and "exit code 5" in reason
        assert "MLmodel file cannot be read" in reason and str(replica.log_path) in reason
        # and it stays down, past the longest backoff
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            await replicas.tick()
            assert replica.pid is None and replica.state == "failed"
            await asyncio.sleep(0.05)
        assert replicas.ready() == []
        await replicas.scale_to(0, no_drain)
        assert replicas.replicas == [] and replicas.crashlooping is None

    asyncio.run(scenario())


def test_a_replica_not_ready_in_time_is_killed(tmp_path: Path) -> None:
    from modelyard.testing.registry import TIMES_K_MODEL_STEP

    hanging = tmp_path / "hanging"
    subprocess.run([sys.executable, "-c", TIMES_K_MODEL_STEP, str(hanging), "2"], check=True)
    # a model whose loading never ends
    (hanging / "code" / "times_k.py").write_text(
        "import time\ndef _load_pyfunc(path):\n    time.sleep(600)\n"
    )
    replicas = ReplicaSet(spec_for(hanging, tmp_path), ready_timeout=1.0, max_restarts=0)

    async def scenario() -> None:
        await replicas.scale_to(1, no_drain)
        [replica] = replicas.replicas
        pid = replica.pid
        assert pid is not None
        await until(replicas, lambda: replica.state == "failed")
        assert replica.last_exit == "not ready in 1s"
        assert "not ready in 1s" in (replicas.crashlooping or "")
        await until(replicas, lambda: not running(pid), timeout=10)  # SIGKILLed, then reaped
        await replicas.stop_all()

    asyncio.run(scenario())


def test_a_replica_that_cannot_start_is_a_death_not_a_crash(package: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    replicas = ReplicaSet(spec_for(package, tmp_path, cwd=missing), max_restarts=0)

    async def scenario() -> None:
        await replicas.scale_to(1, no_drain)
        [replica] = replicas.replicas
        assert replica.state == "failed" and (replica.last_exit or "").startswith("could not start")
        assert str(missing) in (replicas.crashlooping or "")
        await replicas.stop_all()

    asyncio.run(scenario())


PARENT = """
import asyncio, sys
from pathlib import Path
from modelyard.serving.endpoint.replicas import ReplicaSet, ReplicaSpec

async def main():
    spec = ReplicaSpec("shop", "blue", Path(sys.argv[1]), "abalone/1", Path(sys.argv[2]))
    replicas = ReplicaSet(spec)
    async def drain(replica):
        pass
    await replicas.scale_to(1, drain)
    while not replicas.ready():
        await replicas.tick()
        await asyncio.sleep(0.05)
    Path(sys.argv[3]).write_text(str(replicas.ready()[0].pid))
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_replicas_exit_when_their_parent_is_killed(package: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "replica.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(package), str(tmp_path / "logs"), str(pid_file)]
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert parent.poll() is None, "the parent exited"
            assert time.monotonic() < deadline, "the replica did not get ready"
            time.sleep(0.05)
        replica = int(pid_file.read_text())
        assert running(replica)
    finally:
        parent.kill()  # -9: no chance to stop its replicas
        parent.wait()
    # the replica is in its own session: only its parent watch can make it exit
    wait_gone(replica, timeout=5)


def test_logs_are_rotated_at_start_and_while_running(package: Path, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "blue-1.log"
    log.parent.mkdir()
    log.write_text("old\n" * 500)  # 2000 bytes: over the limit
    replicas = ReplicaSet(spec_for(package, tmp_path), log_max_bytes=1000)

    async def scenario() -> None:
        await replicas.scale_to(1, no_drain)
        rotated = log.with_name("blue-1.log.1")
        assert rotated.read_text() == "old\n" * 500  # renamed before the replica started
        assert log.read_text().startswith("--- ")
        [replica] = replicas.replicas
        await until(replicas, lambda: replica.state == "ready")
        with open(log, "a") as out:  # as if the replica wrote a lot
            out.write("new\n" * 500)
        await replicas.tick()
        assert log.stat().st_size == 0  # copied, then truncated in place
        assert rotated.read_text().endswith("new\n" * 500)
        assert log.with_name("blue-1.log.2").read_text() == "old\n" * 500
        await replicas.stop_all()

    asyncio.run(scenario())


def test_options_replicas_must_not_get_are_refused(package: Path, tmp_path: Path) -> None:
    for args in (("--api-keys-env", "KEYS"), ("--api-keys-file=keys.txt",), ("--port", "80")):
        with pytest.raises(ConfigError):
            ReplicaSet(spec_for(package, tmp_path, serve_args=args))
    with pytest.raises(ConfigError, match="not an MLflow model folder"):
        ReplicaSet(spec_for(tmp_path / "nothing", tmp_path))
    with pytest.raises(ConfigError):
        ReplicaSet(spec_for(package, tmp_path), backoff=(0.0, 1.0))
    replicas = ReplicaSet(spec_for(package, tmp_path))
    with pytest.raises(ConfigError):
        asyncio.run(replicas.scale_to(-1, no_drain))
    assert replicas.replicas == []
