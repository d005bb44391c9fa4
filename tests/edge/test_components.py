"""ComponentManager: dependency order, reverse stop, blocked dependents, health, clean shutdown.

Real `sh` processes; ordering is proven by what the scripts themselves record (timestamps,
files one script waits for), not by timing assumptions.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from modelyard.edge.agent.components import (
    ComponentError,
    ComponentManager,
    recipe_dependencies,
    runner_factory,
)
from modelyard.edge.agent.lifecycle import TOKEN_VARIABLE
from modelyard.edge.agent.model import (
    Component,
    Dependency,
    DependencyType,
    Lifecycle,
    LifecycleStep,
    Manifest,
    Platform,
    Recipe,
)
from modelyard.testing.aio import gone, read_pid, run, until


def _phases(steps: dict[str, LifecycleStep]) -> dict[str, Any]:
    unknown = set(steps) - {"install", "startup", "run", "shutdown", "recover"}
    assert not unknown, f"not a lifecycle phase: {unknown}"
    return dict(steps)


def make_component(
    name: str, deps: tuple[tuple[str, DependencyType], ...] = (), **phases: str | LifecycleStep
) -> Component:
    steps = {
        k: v if isinstance(v, LifecycleStep) else LifecycleStep(script=v) for k, v in phases.items()
    }
    manifest = Manifest(Platform(), Lifecycle(**_phases(steps)))
    dependencies = tuple(Dependency(dep, ">=1.0.0", kind) for dep, kind in deps)
    recipe = Recipe("2020-01-25", name, "1.0.0", dependencies=dependencies, manifests=(manifest,))
    return Component(recipe, manifest)


def make_manager(
    root: Path, **options: object
) -> tuple[ComponentManager, list[tuple[str, str, str | None]]]:
    calls: list[tuple[str, str, str | None]] = []
    options.setdefault("kill_grace", 1.0)
    factory = runner_factory(
        root,
        render_for=lambda c: lambda text: text.replace("{root}", str(root)),
        env_for=lambda c: {"COMPONENT": c.name},
        **options,
    )
    manager = ComponentManager(root, runner_factory=factory, on_state=lambda *c: calls.append(c))
    return manager, calls


def our_processes(root: Path) -> list[int]:
    """Live processes a ComponentRunner started (they carry its token) in a work dir of `root`."""
    found = []
    for proc in psutil.process_iter():
        try:
            if (
                proc.pid != os.getpid()
                and proc.status() != psutil.STATUS_ZOMBIE
                and TOKEN_VARIABLE in proc.environ()
                and Path(proc.cwd()).is_relative_to(root)
            ):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def stamp(name: str) -> str:
    return f"date +%s%N > {{root}}/{name}"


def read_stamp(root: Path, name: str) -> int:
    return int((root / name).read_text())


def test_hard_dependencies_are_running_before_dependents_install(tmp_path: Path) -> None:
    a = make_component("A", startup=f"sleep 0.3; {stamp('a.running')}", shutdown="true")
    b = make_component("B", deps=(("A", "HARD"),), install=stamp("b.install"), run="sleep 300")
    c = make_component(
        "C", deps=(("B", "HARD"),), install=stamp("c.install"), run="echo $COMPONENT"
    )
    manager, calls = make_manager(tmp_path)

    async def scenario() -> dict[str, tuple[str, str | None]]:
        try:
            # listed dependents first: the order comes from the graph, not the list
            return await manager.start_all([c, b, a], recipe_dependencies([a, b, c]))
        finally:
            await manager.shutdown()

    states = run(scenario())
    assert states["A"][0] == "RUNNING" and states["B"][0] == "RUNNING"
    assert states["C"][0] in ("RUNNING", "FINISHED")
    assert read_stamp(tmp_path, "a.running") <= read_stamp(tmp_path, "b.install")
    # B is RUNNING as soon as its Run process is up; C's Install comes after that
    b_running = next(i for i, call in enumerate(calls) if call[:2] == ("B", "RUNNING"))
    c_installed = next(i for i, call in enumerate(calls) if call[:2] == ("C", "INSTALLED"))
    assert b_running < c_installed
    assert read_stamp(tmp_path, "b.install") <= read_stamp(tmp_path, "c.install")
    assert "[run:stdout] C" in (tmp_path / "logs" / "C.log").read_text()  # env_for reached it


def test_soft_dependency_does_not_wait_for_the_state(tmp_path: Path) -> None:
    # A's Startup only ends once D has installed: were SOFT waiting for RUNNING, this deadlocks
    a = make_component(
        "A",
        startup=LifecycleStep("while [ ! -f {root}/d.installed ]; do sleep 0.02; done", timeout=10),
    )
    d = make_component("D", deps=(("A", "SOFT"),), install="touch {root}/d.installed", run="true")
    manager, _ = make_manager(tmp_path, max_errors=1)

    async def scenario() -> dict[str, tuple[str, str | None]]:
        try:
            return await manager.start_all([a, d], recipe_dependencies([a, d]))
        finally:
            await manager.shutdown()

    states = run(scenario())
    assert states["A"][0] == "RUNNING"


def test_stop_stops_dependents_before_their_dependencies(tmp_path: Path) -> None:
    graph: dict[str, tuple[tuple[str, DependencyType], ...]] = {
        "A": (),
        "B": (("A", "HARD"),),
        "C": (("B", "HARD"),),
        "X": (),
    }
    components = [
        make_component(name, deps=deps, run="sleep 300", shutdown=f"echo {name} >> {{root}}/stops")
        for name, deps in graph.items()
    ]
    manager, _ = make_manager(tmp_path)

    async def scenario() -> None:
        await manager.start_all(components, recipe_dependencies(components))
        await manager.stop(["A", "C", "B"])
        assert manager.states()["X"][0] == "RUNNING"  # not asked to stop
        await manager.shutdown()

    run(scenario())
    stops = (tmp_path / "stops").read_text().split()
    assert stops[:3] == ["C", "B", "A"]
    assert stops[3:] == ["X"]
    assert manager.states() == {n: ("FINISHED", "stopped") for n in "ABCX"}


def test_broken_dependency_blocks_its_dependents(tmp_path: Path) -> None:
    a = make_component("A", install="exit 1", run="sleep 300")
    b = make_component(
        "B", deps=(("A", "HARD"),), install="touch {root}/b.installed", run="sleep 300"
    )
    c = make_component("C", deps=(("B", "HARD"),), run="sleep 300")
    e = make_component("E", deps=(("A", "SOFT"),), run="sleep 300")
    manager, calls = make_manager(tmp_path, max_errors=1)

    async def scenario() -> dict[str, tuple[str, str | None]]:
        try:
            return await manager.start_all([a, b, c, e], recipe_dependencies([a, b, c, e]))
        finally:
            await manager.shutdown()

    states = run(scenario())
    assert states["A"] == ("BROKEN", "Install exited with code 1 (1 errors within 3600s)")
    assert ("B", "ERRORED", "dependency A is broken") in calls
    assert ("C", "ERRORED", "dependency B did not start (dependency A is broken)") in calls
    assert states["B"][0] == states["C"][0] == "ERRORED"
    assert not (tmp_path / "b.installed").exists()
    assert ("E", "RUNNING", None) in calls  # a SOFT dependency doesn't block


def test_refused_before_anything_runs(tmp_path: Path) -> None:
    a = make_component("A", install="touch {root}/ran")
    b = make_component("B", install="touch {root}/ran")
    manager, _ = make_manager(tmp_path)

    async def scenario() -> None:
        with pytest.raises(ComponentError, match=r"dependency cycle: A -> B -> A; remove"):
            await manager.start_all([a, b], {"A": [("B", "HARD")], "B": [("A", "SOFT")]})
        with pytest.raises(
            ComponentError, match=r"dependencies.A\[0\]: A depends on Z, which is not deployed"
        ):
            await manager.start_all([a], {"A": [("Z", "HARD")]})
        with pytest.raises(
            ComponentError, match=r"dependencies.A\[0\]: dependency type must be HARD or SOFT"
        ):
            await manager.start_all([a], {"A": [("B", "hard")]})  # type: ignore[list-item]
        with pytest.raises(ComponentError, match="listed twice"):
            await manager.start_all([a, a])
        with pytest.raises(ComponentError, match="no component named Q"):
            await manager.stop(["Q"])

    run(scenario())
    assert not (tmp_path / "ran").exists()
    assert manager.states() == {}


def test_wait_settled_success(tmp_path: Path) -> None:
    long = make_component("L", run="sleep 300")
    once = make_component("O", run="true")
    manager, _ = make_manager(tmp_path)

    async def scenario() -> bool:
        try:
            await manager.start_all([long, once])
            outcome = await manager.wait_settled(["L", "O"], health_window=0.5, timeout=10)
            assert outcome.message == "all components are healthy"
            return bool(outcome)
        finally:
            await manager.shutdown()

    assert run(scenario()) is True


def test_wait_settled_fails_on_a_death_within_the_window(tmp_path: Path) -> None:
    healthy = make_component("H", run="sleep 300")
    dying = make_component("D", run="sleep 0.3; echo dying >&2; exit 3")
    manager, _ = make_manager(tmp_path)

    async def scenario() -> None:
        try:
            await manager.start_all([healthy, dying])
            outcome = await manager.wait_settled(["H", "D"], health_window=10, timeout=10)
            assert not outcome
            assert (outcome.component, outcome.state) == ("D", "ERRORED")
            assert outcome.reason == "Run exited with code 3 (within the 10s health window)"
            assert outcome.message.startswith("D is ERRORED: Run exited with code 3")
        finally:
            await manager.shutdown()

    run(scenario())


def test_wait_settled_fails_on_broken_and_on_timeout(tmp_path: Path) -> None:
    broken = make_component("B", install="exit 5")
    slow = make_component("S", startup=LifecycleStep("sleep 5", timeout=10))
    manager, _ = make_manager(tmp_path, max_errors=1)

    async def scenario() -> None:
        try:
            await manager.start_all([broken])
            outcome = await manager.wait_settled(["B"], health_window=5, timeout=5)
            assert (outcome.ok, outcome.component, outcome.state) == (False, "B", "BROKEN")
            assert outcome.reason is not None and "Install exited with code 5" in outcome.reason

            starting = asyncio.create_task(manager.start_all([slow]))
            await until(
                lambda: manager.states().get("S", ("",))[0] == "STARTING", what="S starting"
            )
            outcome = await manager.wait_settled(["S"], health_window=1, timeout=0.3)
            assert (outcome.ok, outcome.component, outcome.state) == (False, "S", "STARTING")
            assert outcome.reason == "not RUNNING after 0.3s"
            missing = await manager.wait_settled(["nope"], health_window=1, timeout=1)
            assert not missing and missing.component == "nope"
        finally:
            await manager.shutdown()
        await starting

    run(scenario())


def test_shutdown_leaves_no_process(tmp_path: Path) -> None:
    daemon = make_component("Daemon", startup="sleep 300 & echo $! > {root}/daemon")
    tree = make_component(
        "Tree",
        run="sh -c 'sleep 300 & echo $! > {root}/grandchild; wait' & echo $! > {root}/child; wait",
    )
    installing = make_component(
        "Installing", install="sleep 300 & echo $! > {root}/installer; wait", run="true"
    )
    waiting = make_component("Waiting", run="sleep 300")
    deps: dict[str, list[tuple[str, DependencyType]]] = {"Waiting": [("Installing", "HARD")]}
    manager, _ = make_manager(tmp_path)

    async def scenario() -> list[int]:
        bring_up = asyncio.create_task(manager.start_all([daemon, tree, installing, waiting], deps))
        pids = [
            await read_pid(tmp_path / f) for f in ("daemon", "child", "grandchild", "installer")
        ]
        await until(lambda: manager.states()["Tree"][0] == "RUNNING", what="Tree running")
        assert our_processes(tmp_path)
        await manager.shutdown()
        await bring_up  # it ends quietly: what it was bringing up was stopped
        return pids

    pids = run(scenario())
    assert all(gone(pid) for pid in pids)
    assert our_processes(tmp_path) == []
    states = manager.states()
    assert states["Waiting"][0] == "NEW"  # never installed: its dependency was stopped first
    assert states["Daemon"] == ("FINISHED", "stopped")


def test_a_running_component_is_not_started_twice(tmp_path: Path) -> None:
    a = make_component("A", run="sleep 300")
    manager, _ = make_manager(tmp_path)

    async def scenario() -> None:
        try:
            await manager.start_all([a])
            with pytest.raises(
                ComponentError, match="A is RUNNING: stop it before starting it again"
            ):
                await manager.start_all([a])
            await manager.stop(["A"])
            # stopped, it can start again (a new version, say)
            assert (await manager.start_all([a]))["A"][0] == "RUNNING"
        finally:
            await manager.shutdown()

    run(scenario())
    assert our_processes(tmp_path) == []


def test_forget_lets_go_of_stopped_components_and_their_log_files(tmp_path: Path) -> None:
    components = [make_component(name, run="sleep 300") for name in ("A", "B")]
    manager, _ = make_manager(tmp_path)

    async def scenario() -> None:
        await manager.start_all(components, recipe_dependencies(components))
        with pytest.raises(ComponentError, match="A is still running"):
            manager.forget(["A"])
        await manager.stop(["A"])
        log = manager.runners["A"]._log  # the file the runner holds open
        assert log._file is not None
        manager.forget(["A", "not-there"])
        assert log._file is None
        assert set(manager.states()) == {"B"}
        await manager.shutdown()

    run(scenario())
