"""ComponentRunner and RotatingLog: real `sh` processes, short timeouts, no sleeps as sync."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import Any

import pytest

from modelyard.edge.agent import lifecycle
from modelyard.edge.agent.lifecycle import ComponentRunner, LifecycleError, State
from modelyard.edge.agent.logs import RotatingLog, component_log_path
from modelyard.edge.agent.model import (
    Component,
    Lifecycle,
    LifecycleStep,
    Manifest,
    Platform,
    Recipe,
    Skipif,
)
from modelyard.testing.aio import gone, read_pid, run, until


def _phases(steps: dict[str, LifecycleStep]) -> dict[str, Any]:
    unknown = set(steps) - {"install", "startup", "run", "shutdown", "recover"}
    assert not unknown, f"not a lifecycle phase: {unknown}"
    return dict(steps)


Step = str | LifecycleStep


def make_component(
    name: str = "com.example.C", setenv: dict[str, str] | None = None, **phases: Step
) -> Component:
    steps = {
        k: v if isinstance(v, LifecycleStep) else LifecycleStep(script=v) for k, v in phases.items()
    }
    manifest = Manifest(Platform(), Lifecycle(setenv or {}, **_phases(steps)))
    recipe = Recipe("2020-01-25", name, "1.0.0", manifests=(manifest,))
    return Component(recipe, manifest)


class Harness:
    """A runner on a tmp root; `{root}` in scripts is that root; records on_state calls."""

    def __init__(self, root: Path, component: Component, **options: Any) -> None:
        self.root = root
        self.calls: list[tuple[str, str, str | None]] = []
        self.log_path = component_log_path(root, component.name)
        options.setdefault("kill_grace", 1.0)
        self.runner = ComponentRunner(
            component,
            root=root,
            render=lambda text: text.replace("{root}", str(root)),
            env=options.pop("env", {}),
            log=RotatingLog(self.log_path),
            on_state=lambda *call: self.calls.append(call),
            **options,
        )

    @property
    def states(self) -> list[str]:
        return [state for _, state, _ in self.calls]

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    @property
    def work(self) -> Path:
        return self.runner.work_dir


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# --- Install --------------------------------------------------------------------------------------


def test_install_ok_runs_in_work_dir_and_logs_output(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_component(install="echo installing; echo warn >&2; pwd > where"))
    assert run(h.runner.install()) is State.INSTALLED
    assert h.calls == [("com.example.C", "INSTALLED", None)]
    assert h.work == tmp_path / "work" / "com.example.C"
    assert (h.work / "where").read_text().strip() == str(h.work)
    log = h.log()
    assert re.search(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[install:stdout\] installing$", log, re.M
    )
    assert "[install:stderr] warn" in log


def test_install_failure_recovers_retries_then_breaks(tmp_path: Path) -> None:
    component = make_component(
        install="echo attempt >> {root}/installs; echo boom >&2; exit 4",
        recover="echo recovered >> {root}/recovers",
    )
    h = Harness(tmp_path, component, max_errors=2)
    assert run(h.runner.install()) is State.BROKEN
    assert h.states == ["ERRORED", "NEW", "ERRORED", "BROKEN"]
    assert h.runner.last_error == "Install exited with code 4"
    assert h.calls[-1][2] == "Install exited with code 4 (2 errors within 3600s)"
    assert len(lines(tmp_path / "installs")) == 2
    assert len(lines(tmp_path / "recovers")) == 1  # no Recover for the error that breaks it
    assert "[install:stderr] boom" in h.log()
    assert "[recover:stdout]" not in h.log()  # recover wrote to a file, not to stdout


def test_install_timeout_kills_the_script_tree(tmp_path: Path) -> None:
    component = make_component(
        install=LifecycleStep("sleep 30 & echo $! > {root}/sleeper; wait", timeout=0.5)
    )
    h = Harness(tmp_path, component, max_errors=1)

    async def scenario() -> float:
        started = time.monotonic()
        assert await h.runner.install() is State.BROKEN
        return time.monotonic() - started

    assert run(scenario()) < 10
    assert h.runner.last_error == "Install timed out after 0.5s"
    assert gone(int((tmp_path / "sleeper").read_text()))


def test_install_without_script_is_installed_and_install_refused_while_running(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, make_component(run="sleep 300"))

    async def scenario() -> None:
        assert await h.runner.install() is State.INSTALLED
        assert await h.runner.start() is State.RUNNING
        with pytest.raises(LifecycleError, match="stop it before installing"):
            await h.runner.install()
        with pytest.raises(LifecycleError, match="only an INSTALLED or FINISHED"):
            await h.runner.start()
        await h.runner.stop()

    run(scenario())
    assert h.states == ["INSTALLED", "RUNNING", "STOPPING", "FINISHED"]


# --- Run ------------------------------------------------------------------------------------------


def test_run_once_finishes(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_component(run="echo hello"))

    async def scenario() -> None:
        await h.runner.install()
        assert await h.runner.start() in (State.RUNNING, State.FINISHED)
        await h.runner.wait_state("FINISHED", timeout=10)

    run(scenario())
    assert h.states == ["INSTALLED", "RUNNING", "FINISHED"]
    assert "[run:stdout] hello" in h.log()


def test_long_running_stop_runs_shutdown_then_kills_the_whole_tree(tmp_path: Path) -> None:
    component = make_component(
        run=(
            "echo $$ > {root}/main;"
            " sh -c 'sleep 300 & echo $! > {root}/grandchild; wait' &"
            " echo $! > {root}/child; wait"
        ),
        shutdown="kill -0 $(cat {root}/main) && echo main-alive > {root}/shutdown",
    )
    h = Harness(tmp_path, component)

    async def scenario() -> list[int]:
        await h.runner.install()
        assert await h.runner.start() is State.RUNNING
        pids = [await read_pid(tmp_path / f) for f in ("main", "child", "grandchild")]
        assert not any(gone(pid) for pid in pids)
        await h.runner.stop()
        return pids

    pids = run(scenario())
    assert all(gone(pid) for pid in pids)
    assert (tmp_path / "shutdown").read_text().strip() == "main-alive"  # Shutdown came first
    assert h.states[-2:] == ["STOPPING", "FINISHED"]
    assert h.runner.reason == "stopped"


def test_run_leftovers_end_with_the_run(tmp_path: Path) -> None:
    # a restart must not meet the previous run's children: they go when its main process exits
    h = Harness(tmp_path, make_component(run="sleep 300 & echo $! > {root}/bg; exit 0"))

    async def scenario() -> int:
        await h.runner.install()
        await h.runner.start()
        await h.runner.wait_state("FINISHED", timeout=10)
        return int((tmp_path / "bg").read_text())

    assert gone(run(scenario()))


def test_stop_sigkills_what_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    component = make_component(run="trap '' TERM; sleep 300 & echo $! > {root}/sleeper; wait; wait")
    h = Harness(tmp_path, component, kill_grace=0.5)

    async def scenario() -> tuple[int, float]:
        await h.runner.install()
        await h.runner.start()
        pid = await read_pid(tmp_path / "sleeper")
        started = time.monotonic()
        await h.runner.stop()
        return pid, time.monotonic() - started

    pid, took = run(scenario())
    assert gone(pid)
    assert 0.5 <= took < 8
    assert h.runner.state is State.FINISHED


def test_run_errors_recover_restart_then_broken(tmp_path: Path) -> None:
    component = make_component(
        run="echo run >> {root}/runs; echo failing >&2; exit 1",
        recover="echo recovered >> {root}/recovers",
    )
    h = Harness(tmp_path, component, max_errors=3)

    async def scenario() -> None:
        await h.runner.install()
        await h.runner.start()
        await h.runner.wait_state("BROKEN", timeout=20)

    run(scenario())
    assert h.states == ["INSTALLED"] + ["RUNNING", "ERRORED"] * 3 + ["BROKEN"]
    assert len(lines(tmp_path / "runs")) == 3
    assert len(lines(tmp_path / "recovers")) == 2
    assert h.runner.last_error == "Run exited with code 1"
    assert h.runner.reason == "Run exited with code 1 (3 errors within 3600s)"
    assert h.log().count("[run:stderr] failing") == 3


def test_errors_outside_the_window_do_not_count(tmp_path: Path) -> None:
    # fails 4 times, then succeeds; the clock jumps 100 s per reading, the window is 50 s
    script = (
        "n=$(cat {root}/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > {root}/count;"
        ' [ "$n" -ge 5 ] && exit 0; exit 1'
    )
    ticks = itertools.count(0, 100)
    h = Harness(
        tmp_path,
        make_component(run=script),
        max_errors=2,
        error_window=50,
        clock=lambda: float(next(ticks)),
    )

    async def scenario() -> None:
        await h.runner.install()
        await h.runner.start()
        await h.runner.wait_state("FINISHED", "BROKEN", timeout=20)

    run(scenario())
    assert h.runner.state is State.FINISHED
    assert h.states.count("ERRORED") == 4


def test_run_timeout_is_an_error(tmp_path: Path) -> None:
    component = make_component(run=LifecycleStep("sleep 30", timeout=0.3))
    h = Harness(tmp_path, component, max_errors=1)

    async def scenario() -> None:
        await h.runner.install()
        await h.runner.start()
        await h.runner.wait_state("BROKEN", timeout=10)

    run(scenario())
    assert h.runner.last_error == "Run timed out after 0.3s"


def test_run_killed_by_signal_is_described(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_component(run="kill -9 $$"), max_errors=1)

    async def scenario() -> None:
        await h.runner.install()
        await h.runner.start()
        await h.runner.wait_state("BROKEN", timeout=10)

    run(scenario())
    assert h.runner.last_error == "Run was killed by signal SIGKILL"


# --- Startup --------------------------------------------------------------------------------------


def test_startup_running_after_exit_background_kept_until_stop(tmp_path: Path) -> None:
    component = make_component(
        startup="sh -c 'echo daemon-up; exec sleep 300' & echo $! > {root}/daemon; echo started",
        shutdown="echo shutting-down",
    )
    h = Harness(tmp_path, component)

    async def scenario() -> int:
        await h.runner.install()
        assert await h.runner.start() is State.RUNNING  # start() didn't wait for the daemon
        pid = await read_pid(tmp_path / "daemon")
        assert not gone(pid)
        # the daemon still writes to the component's log after Startup exited
        await until(lambda: "[startup:stdout] daemon-up" in h.log(), what="daemon output")
        assert h.runner.state is State.RUNNING
        await h.runner.stop()
        return pid

    pid = run(scenario())
    assert gone(pid)
    assert h.states == ["INSTALLED", "STARTING", "RUNNING", "STOPPING", "FINISHED"]
    log = h.log()
    assert "[startup:stdout] started" in log
    assert "[shutdown:stdout] shutting-down" in log


def test_startup_failure_and_timeout(tmp_path: Path) -> None:
    failing = Harness(tmp_path / "a", make_component(startup="exit 2"), max_errors=1)
    slow = Harness(
        tmp_path / "b", make_component(startup=LifecycleStep("sleep 30", timeout=0.3)), max_errors=1
    )

    async def scenario() -> None:
        for h in (failing, slow):
            await h.runner.install()
            assert await h.runner.start() is State.BROKEN

    run(scenario())
    assert failing.states == ["INSTALLED", "STARTING", "ERRORED", "BROKEN"]
    assert failing.runner.last_error == "Startup exited with code 2"
    assert slow.runner.last_error == "Startup timed out after 0.3s"


# --- Skipif, Setenv, privilege, recipe mistakes ---------------------------------------------


def test_skipif_exists_and_onpath(tmp_path: Path) -> None:
    component = make_component(
        install=LifecycleStep("touch {root}/installed", skipif=Skipif("exists", "marker")),
        run=LifecycleStep("touch {root}/ran", skipif=Skipif("onpath", "sh")),
    )
    h = Harness(tmp_path, component)
    h.work.mkdir(parents=True)
    (h.work / "marker").touch()
    other = Harness(
        tmp_path / "o",
        make_component(
            "com.example.O",
            run=LifecycleStep("touch {root}/ran", skipif=Skipif("onpath", "no-such-program-x1")),
        ),
    )

    async def scenario() -> None:
        assert await h.runner.install() is State.INSTALLED
        assert h.runner.reason == "Install skipped: exists marker"
        await h.runner.start()
        await h.runner.wait_state("FINISHED", timeout=5)
        assert h.runner.reason == "Run skipped: onpath sh"
        await other.runner.install()
        await other.runner.start()
        await other.runner.wait_state("FINISHED", timeout=10)

    run(scenario())
    assert not (tmp_path / "installed").exists()
    assert not (tmp_path / "ran").exists()
    assert (tmp_path / "o" / "ran").exists()


def test_setenv_global_then_phase_then_agent_env(tmp_path: Path) -> None:
    component = make_component(
        setenv={"A": "global-a", "B": "global-b", "D": "recipe-d"},
        run=LifecycleStep(
            'echo "$A|$B|$C|$D|$PATH" > {root}/env.out',
            setenv={"B": "phase-b", "C": "{root}/c"},
        ),
    )
    h = Harness(tmp_path, component, env={"D": "agent-d"})

    async def scenario() -> None:
        await h.runner.install()
        await h.runner.start()
        await h.runner.wait_state("FINISHED", timeout=10)

    run(scenario())
    a, b, c, d, path = (tmp_path / "env.out").read_text().strip().split("|")
    assert (a, b, c, d) == ("global-a", "phase-b", f"{tmp_path}/c", "agent-d")
    assert path  # the agent's own environment is the base


def test_output_never_reaches_the_agent_stdout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    h = Harness(tmp_path, make_component(install="echo secret-out; echo secret-err >&2"))
    run(h.runner.install())
    out, err = capfd.readouterr()
    assert "secret" not in out + err
    assert "[install:stdout] secret-out" in h.log()


def test_requires_privilege_as_non_root_is_noted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "agent_is_root", lambda: False)
    component = make_component(
        install=LifecycleStep("id -u > {root}/uid", requires_privilege=True),
        run=LifecycleStep("true", requires_privilege=True),
    )
    h = Harness(tmp_path, component)

    async def scenario() -> None:
        await h.runner.install()
        await h.runner.start()
        await h.runner.wait_state("FINISHED", timeout=10)

    run(scenario())
    assert h.log().count("asks for RequiresPrivilege") == 1
    assert (tmp_path / "uid").exists()


def test_requires_privilege_as_root_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "agent_is_root", lambda: True)
    h = Harness(tmp_path, make_component(install=LifecycleStep("true", requires_privilege=True)))
    assert run(h.runner.install()) is State.INSTALLED
    assert "RequiresPrivilege" not in h.log()


def test_recipe_mistakes_break_at_once_with_the_field(tmp_path: Path) -> None:
    def render(text: str) -> str:
        if "{bad}" in text:
            raise ValueError("unknown recipe variable {bad}; known: {artifacts:path}")
        return text

    calls: list[tuple[str, str, str | None]] = []
    component = make_component(install="echo {bad}")
    runner = ComponentRunner(
        component,
        root=tmp_path,
        render=render,
        env={},
        log=RotatingLog(tmp_path / "c.log"),
        on_state=lambda *c: calls.append(c),
    )
    both = Harness(tmp_path / "both", make_component(startup="true", run="true"))

    async def scenario() -> None:
        assert await runner.install() is State.BROKEN
        await both.runner.install()
        assert await both.runner.start() is State.BROKEN

    run(scenario())
    assert calls == [
        (
            "com.example.C",
            "BROKEN",
            "Lifecycle.Install.Script: unknown recipe variable {bad}; known: {artifacts:path}",
        )
    ]
    assert both.runner.reason is not None and "both Startup and Run" in both.runner.reason


def test_on_state_errors_do_not_break_the_runner(tmp_path: Path) -> None:
    def explode(*_: object) -> None:
        raise RuntimeError("callback bug")

    runner = ComponentRunner(
        make_component(install="true"),
        root=tmp_path,
        render=str,
        env={},
        log=RotatingLog(tmp_path / "c.log"),
        on_state=explode,
    )
    assert run(runner.install()) is State.INSTALLED
    assert "on_state callback failed" in (tmp_path / "c.log").read_text()


# --- RotatingLog ----------------------------------------------------------------------------------


def test_rotating_log_rotates_by_size_and_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "c.log"
    with RotatingLog(path, max_bytes=200, backups=2) as log:
        for i in range(40):
            log.write(f"line {i:02d}" if i % 2 else f"line {i:02d}".encode())
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["c.log", "c.log.1", "c.log.2"]
    for name in files:
        assert (path.parent / name).stat().st_size <= 200
    newest = lines(path)
    assert newest[-1].endswith(" line 39")
    # rotation order: .2 is older than .1, which is older than the live file
    first = [
        int(lines(path.parent / n)[0].rsplit(" ", 1)[1]) for n in ("c.log.2", "c.log.1", "c.log")
    ]
    assert first == sorted(first)


def test_rotating_log_splits_lines_and_stamps_each(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "a.log")
    log.write("one\ntwo\r\n")
    log.write(b"\xff binary")
    log.close()
    got = lines(tmp_path / "a.log")
    assert [line.split(" ", 1)[1] for line in got] == ["one", "two", "\ufffd binary"]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line) for line in got)


def test_rotating_log_without_backups_truncates(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "a.log", max_bytes=100, backups=0)
    for i in range(20):
        log.write(f"entry {i}")
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log"]
    assert (tmp_path / "a.log").stat().st_size <= 100


def test_component_log_path_refuses_escaping_names(tmp_path: Path) -> None:
    assert component_log_path(tmp_path, "com.example.A") == tmp_path / "logs" / "com.example.A.log"
    with pytest.raises(ValueError, match="can't be used"):
        component_log_path(tmp_path, "../evil")
