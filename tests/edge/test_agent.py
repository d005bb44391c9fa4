"""The agent as a real process: `python -m modelyard.edge.agent run`, deployments through the
CLI (`deploy --wait`, `components`, `deployments`), real component processes (sh and Python
components using `modelyard.edge.ipc`) and real IPC over the agent's Unix socket.

Each test starts its own agent on a fresh root with a 1 s health window. Waits poll a condition
against a deadline, never sleep for a fixed time. What runs is checked on the processes
themselves: the agent marks each component process with its root, its run and the component's
name and version in the environment, which the tests read with psutil.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
import yaml

from modelyard.edge.agent.agent import (
    AGENT_ROOT_ENV,
    AGENT_RUN_ENV,
    COMPONENT_NAME_ENV,
    COMPONENT_VERSION_ENV,
)
from modelyard.edge.agent.ipc_broker import SOCKET_PATH_ENV, SVCUID_ENV
from modelyard.edge.agent.journal import DeploymentRecord, DeviceState, Journal

T = TypeVar("T")
PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "agent_data"
AGENT = [PY, "-m", "modelyard.edge.agent"]
THING = ("--thing-name", "test-device")
# a service: records "<version> <pid>" in its work folder, then runs until stopped
SERVICE = 'echo "{version} $$" >> {{work:path}}/runs; exec sleep 600'


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def write_recipe(
    folder: Path,
    name: str,
    version: str,
    *,
    run: str | None = None,
    install: str | dict[str, Any] | None = None,
    deps: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    artifacts: list[dict[str, Any]] | None = None,
) -> Path:
    lifecycle: dict[str, Any] = {}
    if install is not None:
        lifecycle["Install"] = install
    if run is not None:
        lifecycle["Run"] = run
    manifest: dict[str, Any] = {"Platform": {"os": "linux"}, "Lifecycle": lifecycle}
    if artifacts:
        manifest["Artifacts"] = artifacts
    recipe: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "Manifests": [manifest],
    }
    if deps:
        recipe["ComponentDependencies"] = {
            dep: {"VersionRequirement": req, "DependencyType": "HARD"} for dep, req in deps.items()
        }
    if config is not None:
        recipe["ComponentConfiguration"] = {"DefaultConfiguration": config}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return folder


class Device:
    """An agent process on its own root folder, and the CLI pointed at it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = (tmp_path / "r").resolve()
        self.output = tmp_path / "agent.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "MODELYARD_TEST_PYTHON": PY}

    # -- the agent process

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.output, "ab") as out:
            proc = subprocess.Popen(
                [*AGENT, "run", "--root", str(self.root), "--health-window", "1", *THING],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO,
            )
        self.proc = proc

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the agent exited with {proc.returncode}:\n{self.log()}")
            agent = (self.status() or {}).get("agent", {})
            return bool(agent.get("pid") == proc.pid and agent.get("running"))

        wait_for(started, "the agent to start")
        return proc

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def status(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / "status.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- the CLI

    def cli(self, command: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AGENT, command, "--root", str(self.root), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            cwd=REPO,
        )

    def deploy(self, *args: str | Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = self.cli("deploy", *args, "--wait", "--timeout", "60")
        assert result.returncode == expect, (
            f"deploy exited {result.returncode}, not {expect}\n{result.stdout}\n{result.stderr}"
            f"\n--- agent ---\n{self.log()}"
        )
        return result

    def components(self) -> dict[str, dict[str, Any]]:
        result = self.cli("components", "--json")
        assert result.returncode == 0, result.stderr
        listing = json.loads(result.stdout)
        return {c["name"]: c for c in listing["components"]}

    def versions(self) -> dict[str, tuple[str, str]]:
        return {name: (c["version"], c["state"]) for name, c in self.components().items()}

    def deployments(self) -> list[dict[str, Any]]:
        result = self.cli("deployments", "--json")
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout))

    # -- what runs

    def processes(self) -> list[dict[str, Any]]:
        """Every live process the agents of this root started (by the agent's marker)."""
        found = []
        for proc in psutil.process_iter():
            try:
                env = proc.environ()
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            if env.get(AGENT_ROOT_ENV) == str(self.root):
                found.append(
                    {
                        "pid": proc.pid,
                        "run": env.get(AGENT_RUN_ENV),
                        "component": env.get(COMPONENT_NAME_ENV),
                        "version": env.get(COMPONENT_VERSION_ENV),
                        "env": env,
                    }
                )
        return found

    def work(self, component: str) -> Path:
        return self.root / "work" / component

    def runs(self, component: str) -> list[tuple[str, int]]:
        path = self.work(component) / "runs"
        if not path.exists():
            return []
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
        return [(parts[0], int(parts[-1])) for parts in lines]

    def current(self) -> DeviceState:
        return Journal(self.root).current()

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for entry in self.processes():  # whatever a failed test left behind
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(entry["pid"]), signal.SIGKILL)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    dev = Device(tmp_path)
    try:
        yield dev
    finally:
        dev.cleanup()


def update_config(name: str, *, merge: Any = None, reset: list[str] | None = None) -> str:
    entry: dict[str, Any] = {}
    if merge is not None:
        entry["MERGE"] = merge
    if reset is not None:
        entry["RESET"] = reset
    return json.dumps({name: entry})


# --- deployments ---------------------------------------------------------------------------


def test_a_component_and_its_dependency_run_and_remove_stops_only_what_goes(
    device: Device,
) -> None:
    recipes = device.tmp / "recipes"
    write_recipe(recipes, "com.example.Lib", "1.0.0", run=SERVICE.format(version="1.0.0"))
    app_run = (
        "echo '{com.example.Lib:work:path} {iot:thingName} {kernel:rootPath} "
        "{configuration:/greeting}' > {work:path}/seen; " + SERVICE.format(version="1.0.0")
    )
    write_recipe(
        recipes,
        "com.example.App",
        "1.0.0",
        run=app_run,
        deps={"com.example.Lib": "^1.0.0"},
        config={"greeting": "hi"},
    )
    device.start()

    device.deploy("--recipe-dir", recipes, "--merge", "com.example.App=1.0.0")

    assert device.versions() == {
        "com.example.App": ("1.0.0", "RUNNING"),
        "com.example.Lib": ("1.0.0", "RUNNING"),  # resolved as App's dependency
    }
    listing = json.loads(device.cli("components", "--json").stdout)
    assert listing["agentRunning"] is True
    seen = (device.work("com.example.App") / "seen").read_text().split()
    assert seen == [str(device.work("com.example.Lib")), "test-device", str(device.root), "hi"]
    app_pid = device.runs("com.example.App")[-1][1]
    lib_pid = device.runs("com.example.Lib")[-1][1]
    app = next(p for p in device.processes() if p["pid"] == app_pid)
    assert app["env"][SOCKET_PATH_ENV] == str(device.root / "ipc.socket")
    assert app["env"][SVCUID_ENV] and app["env"]["AWS_IOT_THING_NAME"] == "test-device"

    # Lib becomes a root too: nothing changes, nothing restarts
    device.deploy("--merge", "com.example.Lib=1.0.0")
    assert device.current().roots == {"com.example.App": "1.0.0", "com.example.Lib": "1.0.0"}
    assert [pid for _, pid in device.runs("com.example.App")] == [app_pid]

    device.deploy("--remove", "com.example.App")

    assert device.versions() == {"com.example.Lib": ("1.0.0", "RUNNING")}
    assert not alive(app_pid)
    assert alive(lib_pid) and [pid for _, pid in device.runs("com.example.Lib")] == [lib_pid]
    assert [d["status"] for d in device.deployments()] == ["SUCCEEDED"] * 3
    text = device.cli("components").stdout
    assert "com.example.Lib" in text and "RUNNING" in text and "com.example.App" not in text


def _hello(folder: Path, version: str, *, exit_code: int | None = None) -> Path:
    # records "<version> <message> <pid>": which version ran, with which configuration
    tail = f"exit {exit_code}" if exit_code is not None else "exec sleep 600"
    run = f'echo "{version} {{configuration:/message}} $$" >> {{work:path}}/runs; {tail}'
    return write_recipe(
        folder, "com.example.Hello", version, run=run, config={"message": f"default-{version}"}
    )


def test_a_failing_new_version_is_rolled_back_with_its_configuration(device: Device) -> None:
    device.start()
    device.deploy(
        "--recipe-dir",
        _hello(device.tmp / "v1", "1.0.0"),
        "--merge",
        "com.example.Hello=1.0.0",
        "--update-config",
        update_config("com.example.Hello", merge={"message": "custom"}),
    )
    runs_file = device.work("com.example.Hello") / "runs"
    assert runs_file.read_text().split()[:2] == ["1.0.0", "custom"]
    first_pid = device.runs("com.example.Hello")[0][1]

    result = device.deploy(
        "--recipe-dir",
        _hello(device.tmp / "v2", "2.0.0", exit_code=1),
        "--merge",
        "com.example.Hello=2.0.0",
        "--update-config",
        update_config("com.example.Hello", merge={"message": "new"}),
        expect=1,
    )

    assert "com.example.Hello 2.0.0: Run exited with code 1 (3 errors within" in result.stdout
    assert "rolled back to com.example.Hello 1.0.0" in result.stdout
    lines = [line.split() for line in runs_file.read_text().splitlines()]
    assert [line[:2] for line in lines] == [
        ["1.0.0", "custom"],
        ["2.0.0", "new"],  # 2.0.0 ran with its new configuration, three times
        ["2.0.0", "new"],
        ["2.0.0", "new"],
        ["1.0.0", "custom"],  # then 1.0.0 again, with its configuration as it was
    ]
    restarted = int(lines[-1][-1])
    assert restarted != first_pid and alive(restarted) and not alive(first_pid)
    assert device.versions() == {"com.example.Hello": ("1.0.0", "RUNNING")}
    current = device.current()
    assert current.components == {"com.example.Hello": "1.0.0"}
    assert current.configuration == {"com.example.Hello": {"message": "custom"}}
    last = device.deployments()[-1]
    assert last["status"] == "FAILED"
    assert "rolled back to com.example.Hello 1.0.0" in last["reason"]
    assert "Run exited with code 1" in device.cli("deployments").stdout


def test_do_nothing_leaves_the_broken_version_in_place(device: Device) -> None:
    device.start()
    device.deploy(
        "--recipe-dir", _hello(device.tmp / "v1", "1.0.0"), "--merge", "com.example.Hello=1.0.0"
    )

    result = device.deploy(
        "--recipe-dir",
        _hello(device.tmp / "v2", "2.0.0", exit_code=1),
        "--merge",
        "com.example.Hello=2.0.0",
        "--failure-policy",
        "DO_NOTHING",
        expect=1,
    )

    assert "left as is (failureHandlingPolicy DO_NOTHING)" in result.stdout
    assert device.versions() == {"com.example.Hello": ("2.0.0", "BROKEN")}
    assert device.current().components == {"com.example.Hello": "2.0.0"}
    assert [version for version, _ in device.runs("com.example.Hello")] == ["1.0.0"] + ["2.0.0"] * 3
    assert not any(p["component"] == "com.example.Hello" for p in device.processes())


def test_configuration_merge_and_reset_across_deployments(device: Device) -> None:
    recipes = write_recipe(
        device.tmp / "recipes",
        "com.example.Conf",
        "1.0.0",
        run="echo '{configuration:/message} {configuration:/nested}' > {work:path}/config; "
        "exec sleep 600",
        config={"message": "default", "nested": {"a": 1, "b": 2}},
    )
    config_file = device.work("com.example.Conf") / "config"
    device.start()

    device.deploy(
        "--recipe-dir",
        recipes,
        "--merge",
        "com.example.Conf=1.0.0",
        "--update-config",
        update_config("com.example.Conf", merge={"message": "hello", "nested": {"b": 3}}),
    )
    assert config_file.read_text().split() == ["hello", '{"a":1,"b":3}']

    # RESET before MERGE; the stored configuration is the base; given as a file this time
    update = device.tmp / "update.json"
    update.write_text(
        update_config("com.example.Conf", merge={"nested": {"c": 4}}, reset=["/message"])
    )
    device.deploy("--update-config", update)
    assert config_file.read_text().split() == ["default", '{"a":1,"b":3,"c":4}']
    assert device.current().configuration["com.example.Conf"] == {
        "message": "default",
        "nested": {"a": 1, "b": 3, "c": 4},
    }

    device.deploy("--update-config", update_config("com.example.Conf", reset=[""]))
    assert config_file.read_text().split() == ["default", '{"a":1,"b":2}']


def test_notified_components_can_defer_an_update(device: Device) -> None:
    worker = device.tmp / "worker"
    stamp = 'echo "{v} $(date +%s.%N) $$" >> {{work:path}}/runs; exec sleep 600'
    write_recipe(worker, "com.example.Worker", "1.0.0", run=stamp.format(v="1.0.0"))
    device.start()
    device.deploy(
        "--recipe-dir",
        DATA / "recipes" / "notify",
        "--recipe-dir",
        worker,
        "--artifact-dir",
        DATA / "artifacts",
        "--merge",
        "com.example.Deferrer=1.0.0",
        "com.example.Worker=1.0.0",
    )
    updates = device.work("com.example.Deferrer") / "updates.log"
    wait_for(lambda: updates.exists() and "ready" in updates.read_text(), "the Deferrer")
    deferrer_pids = {
        p["pid"] for p in device.processes() if p["component"] == "com.example.Deferrer"
    }
    write_recipe(worker, "com.example.Worker", "2.0.0", run=stamp.format(v="2.0.0"))

    result = device.deploy(
        "--recipe-dir",
        worker,
        "--merge",
        "com.example.Worker=2.0.0",
        "--notify-timeout",
        "10",
        "--json",
    )

    record = json.loads(result.stdout)
    assert record["status"] == "SUCCEEDED"
    assert [(d["component"], d["recheckAfterMs"], d["message"]) for d in record["deferrals"]] == [
        ("com.example.Deferrer", 1500, "busy: finishing a batch")
    ]
    deployment_id = record["deploymentId"]
    lines = [line.split() for line in updates.read_text().splitlines()]
    assert lines[0][1:] == ["ready", "nightly"]  # it read its configuration over IPC
    events = [(e[1], float(e[0])) for e in lines if e[2] == deployment_id]
    assert [name for name, _ in events] == ["deferred", "acked", "post"]
    deferred_at = events[0][1]
    worker_lines = (device.work("com.example.Worker") / "runs").read_text().split("\n")
    started_v2 = float(next(line for line in worker_lines if line.startswith("2.0.0")).split()[1])
    assert started_v2 - deferred_at >= 1.4  # the update waited out the 1.5 s deferral
    assert device.versions()["com.example.Worker"] == ("2.0.0", "RUNNING")
    # the Deferrer itself was not part of the change: it was not restarted
    assert {p["pid"] for p in device.processes() if p["component"] == "com.example.Deferrer"} == (
        deferrer_pids
    )


def test_a_bad_deployment_fails_with_nothing_changed(device: Device) -> None:
    recipes = write_recipe(
        device.tmp / "v1", "com.example.A", "1.0.0", run=SERVICE.format(version="1.0.0")
    )
    device.start()
    device.deploy("--recipe-dir", recipes, "--merge", "com.example.A=1.0.0")
    [(_, pid)] = device.runs("com.example.A")
    before = device.current()

    # an artifact that is not what its recipe says
    artifacts = device.tmp / "artifacts"
    (artifacts / "com.example.A" / "1.1.0").mkdir(parents=True)
    (artifacts / "com.example.A" / "1.1.0" / "tool.sh").write_text("echo tampered\n")
    bad_digest = write_recipe(
        device.tmp / "v11",
        "com.example.A",
        "1.1.0",
        run=SERVICE.format(version="1.1.0"),
        artifacts=[{"URI": "s3://bucket/tool.sh", "Digest": digest(b"echo original\n")}],
    )
    result = device.deploy(
        "--recipe-dir",
        bad_digest,
        "--artifact-dir",
        artifacts,
        "--merge",
        "com.example.A=1.1.0",
        expect=1,
    )
    assert "does not match the digest of s3://bucket/tool.sh" in result.stdout
    assert "nothing was changed" in result.stdout

    # a component no recipe provides
    result = device.deploy("--merge", "com.example.Nope=1.0.0", expect=1)
    assert "no recipe for com.example.Nope" in result.stdout

    # a script whose recipe variable can't render
    unrenderable = write_recipe(
        device.tmp / "v12", "com.example.A", "1.2.0", run="echo {nope:thing}; exec sleep 600"
    )
    result = device.deploy("--recipe-dir", unrenderable, "--merge", "com.example.A=1.2.0", expect=1)
    assert "unknown recipe variable {nope:thing}" in result.stdout

    # a malformed recipe is refused by the CLI itself: exit 2, one line, nothing queued
    malformed = write_recipe(device.tmp / "v13", "com.example.A", "1.3.0", run="true")
    path = malformed / "com.example.A-1.3.0.yaml"
    path.write_text(path.read_text().replace("Run:", "Runn:"))
    refused = device.cli("deploy", "--recipe-dir", malformed, "--merge", "com.example.A=1.3.0")
    assert refused.returncode == 2
    assert "Manifests[0].Lifecycle.Runn" in refused.stderr and "did you mean Run?" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    bad_input = device.cli("deploy", "--update-config", "{not json")
    assert bad_input.returncode == 2 and "--update-config" in bad_input.stderr

    assert [d["status"] for d in device.deployments()] == ["SUCCEEDED"] + ["FAILED"] * 3
    assert alive(pid) and device.runs("com.example.A") == [("1.0.0", pid)]
    assert device.versions() == {"com.example.A": ("1.0.0", "RUNNING")}
    assert device.current() == before


def test_deployments_queued_without_an_agent_run_in_order_when_it_starts(
    device: Device,
) -> None:
    recipes = device.tmp / "recipes"
    write_recipe(recipes, "com.example.A", "1.0.0", run=SERVICE.format(version="1.0.0"))
    write_recipe(recipes, "com.example.B", "1.0.0", run=SERVICE.format(version="1.0.0"))
    missing = device.cli("components")
    assert missing.returncode == 3 and "no agent root at" in missing.stderr

    first = device.cli(
        "deploy", "--recipe-dir", recipes, "--merge", "com.example.A=1.0.0", "--json"
    )
    second = device.cli("deploy", "--merge", "com.example.B=1.0.0", "--json")

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "no agent is running" in first.stderr
    ids = [json.loads(r.stdout)["deploymentId"] for r in (first, second)]
    assert [(d["deploymentId"], d["status"]) for d in device.deployments()] == [
        (ids[0], "QUEUED"),
        (ids[1], "QUEUED"),
    ]
    # the second builds on the first (queued) one: A stays a root
    queued = [
        json.loads(p.read_text()) for p in sorted((device.root / "deployments" / "queue").iterdir())
    ]
    assert sorted(queued[1]["components"]) == ["com.example.A", "com.example.B"]

    device.start()

    def done() -> list[dict[str, Any]] | None:
        listing = device.deployments()
        return listing if all(d["status"] == "SUCCEEDED" for d in listing) else None

    finished = wait_for(done, "both deployments")
    assert [d["deploymentId"] for d in finished] == ids
    assert finished[0]["finishedAt"] <= finished[1]["startedAt"]
    assert device.versions() == {
        "com.example.A": ("1.0.0", "RUNNING"),
        "com.example.B": ("1.0.0", "RUNNING"),
    }
    assert list((device.root / "deployments" / "queue").iterdir()) == []


# --- crash safety and the process ------------------------------------------------------------


def test_kill_9_during_a_deployment_then_restart_rolls_back_to_one_set(device: Device) -> None:
    v1 = device.tmp / "v1"
    write_recipe(v1, "com.example.Base", "1.0.0", run=SERVICE.format(version="1.0.0"))
    write_recipe(
        v1,
        "com.example.Top",
        "1.0.0",
        run=SERVICE.format(version="1.0.0"),
        deps={"com.example.Base": "^1.0.0"},
    )
    v2 = device.tmp / "v2"
    write_recipe(v2, "com.example.Base", "2.0.0", run=SERVICE.format(version="2.0.0"))
    write_recipe(
        v2,
        "com.example.Top",
        "2.0.0",
        run=SERVICE.format(version="2.0.0"),
        # still installing when the agent is killed: Base 2.0.0 already runs by then
        install={"Script": "touch {work:path}/installing-2.0.0; exec sleep 600", "Timeout": 300},
        deps={"com.example.Base": "^2.0.0"},
    )
    device.start()
    device.deploy("--recipe-dir", v1, "--merge", "com.example.Base=1.0.0", "com.example.Top=1.0.0")

    queued = device.cli(
        "deploy", "--recipe-dir", v2, "--merge", "com.example.Base=2.0.0", "com.example.Top=2.0.0"
    )
    assert queued.returncode == 0, queued.stderr
    wait_for(
        lambda: (device.work("com.example.Top") / "installing-2.0.0").exists(),
        "Top 2.0.0 to be installing",
    )
    old_run = (device.status() or {})["agent"]["runId"]
    device.kill9()

    orphans = device.processes()
    assert {(p["component"], p["version"]) for p in orphans} == {
        ("com.example.Base", "2.0.0"),  # the new Base runs...
        ("com.example.Top", "2.0.0"),  # ...and Top's Install: a mix, with nobody in charge
    }
    assert {p["run"] for p in orphans} == {old_run}

    device.start()

    def settled() -> dict[str, tuple[str, str]] | None:
        versions = device.versions()
        return versions if all(s == "RUNNING" for _, s in versions.values()) else None

    assert wait_for(settled, "the components to run") == {
        "com.example.Base": ("1.0.0", "RUNNING"),
        "com.example.Top": ("1.0.0", "RUNNING"),
    }
    assert not any(alive(p["pid"]) for p in orphans)
    running = device.processes()
    new_run = (device.status() or {})["agent"]["runId"]
    assert {p["run"] for p in running} == {new_run} != {old_run}
    assert sorted((p["component"], p["version"]) for p in running) == [
        ("com.example.Base", "1.0.0"),
        ("com.example.Top", "1.0.0"),
    ]
    last = device.deployments()[-1]
    assert last["status"] == "FAILED"
    assert "the agent stopped during the deployment (phase STARTING)" in last["reason"]
    assert "rolled back to com.example.Base 1.0.0, com.example.Top 1.0.0" in last["reason"]
    assert device.current().components == {"com.example.Base": "1.0.0", "com.example.Top": "1.0.0"}
    assert "stopped 2 process(es) left by an earlier agent" in device.log()


def test_a_committed_deployment_is_completed_after_a_restart(device: Device) -> None:
    # the agent died between writing current.json (the commit point) and the record
    journal = Journal(device.root)
    device.root.mkdir(mode=0o700)
    state = DeviceState(roots={}, components={}, configuration={}, last_deployment_id="d-7")
    journal.write_current(state)
    record = DeploymentRecord("d-7", {"deploymentId": "d-7", "components": {}})
    record.status, record.phase, record.snapshot = "IN_PROGRESS", "COMMITTING", DeviceState()
    journal.save(record)

    device.start()

    [only] = device.deployments()
    assert (only["deploymentId"], only["status"], only["reason"]) == ("d-7", "SUCCEEDED", None)


def test_components_talk_over_local_pubsub_and_a_denied_publish_is_logged(
    device: Device,
) -> None:
    device.start()
    device.deploy(
        "--recipe-dir",
        DATA / "recipes" / "pubsub",
        "--artifact-dir",
        DATA / "artifacts",
        "--merge",
        "com.example.Publisher=1.0.0",
        "com.example.Subscriber=1.0.0",
    )
    published = device.work("com.example.Publisher") / "publisher.log"
    received = device.work("com.example.Subscriber") / "received.log"

    denial = wait_for(
        lambda: published.exists() and published.read_text().strip(), "the forbidden publish"
    )
    assert denial == "denied 3 UNAUTHORIZED"

    def received_after_denial() -> bool:
        if not received.exists():
            return False
        numbers = [json.loads(line)["message"]["n"] for line in received.read_text().splitlines()]
        return max(numbers, default=0) > 5

    wait_for(received_after_denial, "messages after the denied publish")
    lines = [json.loads(line) for line in received.read_text().splitlines()]
    assert {line["topic"] for line in lines} == {"local/data"}
    agent_log = (device.root / "logs" / "modelyard-agent.log").read_text()
    assert "denied: com.example.Publisher may not PublishToTopic on forbidden/topic" in agent_log
    assert device.versions() == {
        "com.example.Publisher": ("1.0.0", "RUNNING"),
        "com.example.Subscriber": ("1.0.0", "RUNNING"),
    }
    logs = device.cli("logs")
    assert logs.returncode == 0 and "denied: com.example.Publisher" in logs.stdout
    own = device.cli("logs", "com.example.Subscriber")
    assert own.returncode == 0 and "[lifecycle] RUNNING" in own.stdout
    unknown = device.cli("logs", "com.example.Nope")
    assert unknown.returncode == 3 and "com.example.Subscriber" in unknown.stderr  # the known ones


def test_a_second_agent_on_the_same_root_is_refused(device: Device) -> None:
    first = device.start()

    second = subprocess.run(
        [*AGENT, "run", "--root", str(device.root)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )

    assert second.returncode == 4
    assert f"another modelyard-agent (pid {first.pid}) is already running on {device.root}" in (
        second.stderr
    )
    assert "Traceback" not in second.stderr
    assert first.poll() is None
    assert (device.status() or {})["agent"]["pid"] == first.pid


def test_sigterm_stops_every_component_and_the_agent(device: Device) -> None:
    recipes = device.tmp / "recipes"
    write_recipe(recipes, "com.example.Base", "1.0.0", run=SERVICE.format(version="1.0.0"))
    write_recipe(
        recipes,
        "com.example.Top",
        "1.0.0",
        run=SERVICE.format(version="1.0.0"),
        deps={"com.example.Base": "^1.0.0"},
    )
    device.start()
    device.deploy("--recipe-dir", recipes, "--merge", "com.example.Top=1.0.0")
    pids = [p["pid"] for p in device.processes()]
    assert len(pids) == 2

    assert device.stop() == 0

    assert not any(alive(pid) for pid in pids)
    assert device.processes() == []
    assert not (device.root / "ipc.socket").exists()
    listing = json.loads(device.cli("components", "--json").stdout)
    assert listing["agentRunning"] is False
    assert {c["name"]: c["state"] for c in listing["components"]} == {
        "com.example.Base": "FINISHED",
        "com.example.Top": "FINISHED",
    }
    assert "the agent is not running" in device.cli("components").stdout
    log = device.log()
    # dependents stop first
    assert log.index("com.example.Top 1.0.0: FINISHED") < log.index(
        "com.example.Base 1.0.0: STOPPING"
    )
