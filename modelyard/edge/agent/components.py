"""The components of a device, together: started in dependency order, stopped in reverse.

`ComponentManager` owns one `ComponentRunner` per component and the dependency graph between them
(Greengrass v2 `ComponentDependencies`, already resolved to names and types):

- `start_all(components, dependencies)` brings every component up concurrently, each one once its
  dependencies allow it: a HARD dependency must be RUNNING or FINISHED before the dependent's
  Install begins; a SOFT one only needs to have been started (its state is not awaited). A HARD
  dependency that ends BROKEN (or never starts) keeps its dependents from starting: they become
  ERRORED with "dependency X is broken". A cycle, an unknown dependency or a component listed
  twice is refused before anything runs.
- `stop(names)` stops dependents before what they depend on; `shutdown()` stops everything and
  leaves no process behind.
- `wait_settled(names, health_window, timeout)` is what a deployment decides on: success once
  every component is RUNNING (or FINISHED, for run-once ones) and none of them went ERRORED or
  BROKEN during the following `health_window` seconds; otherwise which component failed and why.

Restarting HARD dependents when their dependency changes state is not done here (yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.edge.agent.lifecycle import ComponentRunner, State, StateCallback
from modelyard.edge.agent.logs import RotatingLog, component_log_path
from modelyard.edge.agent.model import Component, DependencyType

# how the manager gets a runner: (component, the callback it must report states to) -> runner
RunnerFactory = Callable[[Component, StateCallback], ComponentRunner]
Dependencies = Mapping[str, Sequence[tuple[str, DependencyType]]]

SETTLED = (State.RUNNING, State.FINISHED)


class ComponentError(Exception):
    """A set of components that can't be started as given (the message says how to fix it)."""


@dataclass(frozen=True)
class Outcome:
    """Whether the components settled; on failure, which one and why."""

    ok: bool
    component: str | None = None
    state: str | None = None
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.ok

    @property
    def message(self) -> str:
        if self.ok:
            return "all components are healthy"
        return f"{self.component} is {self.state}: {self.reason or 'no reason given'}"


@dataclass(frozen=True)
class Transition:
    time: float
    component: str
    state: str
    reason: str | None


def recipe_dependencies(
    components: Iterable[Component],
) -> dict[str, list[tuple[str, DependencyType]]]:
    """The dependency graph as `start_all` takes it, from the recipes' ComponentDependencies."""
    return {
        c.name: [(d.name, d.dependency_type) for d in c.recipe.dependencies] for c in components
    }


def runner_factory(
    root: Path,
    *,
    render_for: Callable[[Component], Callable[[str], str]],
    env_for: Callable[[Component], Mapping[str, str]] | None = None,
    **options: Any,
) -> RunnerFactory:
    """A factory giving each component its log `<root>/logs/<name>.log` and work dir.

    `render_for(component)` gives the recipe-variable interpolation of that component,
    `env_for(component)` its extra environment (IPC token, socket path); `options` go to
    `ComponentRunner` (max_errors, error_window, kill_grace, ...).
    """

    def make(component: Component, on_state: StateCallback) -> ComponentRunner:
        return ComponentRunner(
            component,
            root=root,
            render=render_for(component),
            env=env_for(component) if env_for is not None else {},
            log=RotatingLog(component_log_path(root, component.name)),
            on_state=on_state,
            **options,
        )

    return make


class ComponentManager:
    """Runs many components in dependency order; see the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        runner_factory: RunnerFactory,
        on_state: StateCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(root)
        self._factory = runner_factory
        self._on_state = on_state
        self._clock = clock
        self._runners: dict[str, ComponentRunner] = {}
        self._deps: dict[str, tuple[tuple[str, DependencyType], ...]] = {}
        self._bringups: dict[str, asyncio.Task[None]] = {}
        self._start_called: set[str] = set()
        self.transitions: list[Transition] = []
        self._changed = asyncio.Event()
        self._closing = False

    # -- reading

    @property
    def runners(self) -> Mapping[str, ComponentRunner]:
        return dict(self._runners)

    def states(self) -> dict[str, tuple[str, str | None]]:
        return {name: (r.state.value, r.reason) for name, r in self._runners.items()}

    # -- starting

    async def start_all(
        self, components: Sequence[Component], dependencies: Dependencies | None = None
    ) -> dict[str, tuple[str, str | None]]:
        """Install and start `components` in dependency order; returns `states()` after.

        Returns once every one of them is RUNNING, FINISHED, BROKEN or blocked (ERRORED by a
        broken dependency); restarts after errors continue in the background.
        """
        if self._closing:
            raise ComponentError("the component manager was shut down; create a new one")
        graph = self._validate(components, dependencies or {})
        for component in components:
            name = component.name
            self._runners[name] = self._factory(component, self._record)
            self._deps[name] = graph[name]
            self._start_called.discard(name)
        tasks = []
        for component in components:
            task = asyncio.create_task(self._bring_up(component.name), name=f"up:{component.name}")
            # dependents waiting on it re-check once it is over (it may never have started)
            task.add_done_callback(lambda _: self._notify())
            self._bringups[component.name] = task
            tasks.append(task)
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):  # not a cancellation by stop()/shutdown()
                raise result
        return self.states()

    def _validate(
        self, components: Sequence[Component], dependencies: Dependencies
    ) -> dict[str, tuple[tuple[str, DependencyType], ...]]:
        names = [c.name for c in components]
        new: set[str] = set()
        for name in names:
            if name in new:
                raise ComponentError(f"component {name} is listed twice: list it once")
            new.add(name)
            runner = self._runners.get(name)
            if runner is not None and (runner.active or self._bringing_up(name)):
                raise ComponentError(
                    f"component {name} is {runner.state}: stop it before starting it again"
                )
        for name in dependencies:
            if name not in new:
                raise ComponentError(
                    f"dependencies.{name}: {name} is not among the components to start"
                )
        graph: dict[str, tuple[tuple[str, DependencyType], ...]] = {}
        for name in names:
            entries = []
            for index, entry in enumerate(dependencies.get(name, ())):
                where = f"dependencies.{name}[{index}]"
                if not (isinstance(entry, tuple | list) and len(entry) == 2):
                    raise ComponentError(f"{where}: expected (component name, HARD|SOFT)")
                dep, kind = entry
                if kind not in ("HARD", "SOFT"):
                    raise ComponentError(
                        f"{where}: dependency type must be HARD or SOFT, not {kind!r}"
                    )
                if dep not in new:
                    runner = self._runners.get(dep)
                    if runner is None:
                        raise ComponentError(
                            f"{where}: {name} depends on {dep}, which is not deployed; "
                            f"add {dep} to the components to start"
                        )
                    if not (runner.active or self._bringing_up(dep)):
                        raise ComponentError(
                            f"{where}: {name} depends on {dep}, which is {runner.state} and not "
                            f"running; start {dep} together with {name}"
                        )
                entries.append((dep, kind))
            graph[name] = tuple(entries)
        cycle = _find_cycle({**self._deps, **graph})
        if cycle:
            raise ComponentError(
                f"dependency cycle: {' -> '.join(cycle)}; remove one of these dependencies"
            )
        return graph

    def _bringing_up(self, name: str) -> bool:
        task = self._bringups.get(name)
        return task is not None and not task.done()

    async def _bring_up(self, name: str) -> None:
        runner = self._runners[name]
        blocked = await self._wait_dependencies(name)
        if blocked is not None:
            runner.block(blocked)
            return
        if self._closing or await runner.install() is not State.INSTALLED:
            return
        if self._closing:
            return
        self._start_called.add(name)
        self._notify()
        await runner.start()

    async def _wait_dependencies(self, name: str) -> str | None:
        """Wait until the dependencies allow `name` to start; the reason if they never will."""
        while True:
            changed = self._changed
            waiting = False
            for dep, kind in self._deps[name]:
                runner = self._runners[dep]
                if kind == "SOFT":
                    waiting |= dep not in self._start_called and self._bringing_up(dep)
                    continue
                if runner.state is State.BROKEN:
                    return f"dependency {dep} is broken"
                if runner.blocked:
                    return f"dependency {dep} did not start ({runner.reason})"
                if runner.active and runner.state in SETTLED:
                    continue
                if not (runner.active or self._bringing_up(dep)):
                    return f"dependency {dep} is not running ({runner.state})"
                waiting = True
            if not waiting:
                return None
            await changed.wait()

    # -- stopping

    async def stop(self, names: Iterable[str]) -> None:
        """Stop `names`, each after the ones among them that depend on it (directly or not)."""
        names = list(dict.fromkeys(names))
        unknown = [n for n in names if n not in self._runners]
        if unknown:
            raise ComponentError(f"no component named {', '.join(unknown)} on this device")
        for name in names:  # a bring-up still waiting or installing must not start it later
            task = self._bringups.get(name)
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(
            *(self._bringups[n] for n in names if n in self._bringups), return_exceptions=True
        )
        stopped = {name: asyncio.Event() for name in names}
        after = {
            name: [other for other in names if other != name and name in self._closure(other)]
            for name in names
        }

        async def stop_one(name: str) -> None:
            try:
                for other in after[name]:
                    await stopped[other].wait()
                await self._runners[name].stop()
            finally:
                stopped[name].set()

        await asyncio.gather(*(stop_one(name) for name in names))

    def forget(self, names: Iterable[str]) -> None:
        """Let go of stopped components (removed from the device, or about to be replaced):
        their runners, and the log files those hold open."""
        for name in names:
            runner = self._runners.get(name)
            if runner is None:
                continue
            if runner.active:
                raise ComponentError(f"{name} is still running: stop it before forgetting it")
            runner.close()
            del self._runners[name]
            self._deps.pop(name, None)
            self._bringups.pop(name, None)
            self._start_called.discard(name)

    async def shutdown(self) -> None:
        """Stop every component (dependents first) and make sure none of their processes is left."""
        self._closing = True
        try:
            await self.stop(list(self._runners))
        finally:
            for runner in self._runners.values():
                runner.kill_now()

    def _closure(self, name: str) -> set[str]:
        """Everything `name` depends on, directly or through others."""
        seen: set[str] = set()
        todo = [dep for dep, _ in self._deps.get(name, ())]
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(d for d, _ in self._deps.get(dep, ()))
        return seen

    # -- health

    async def wait_settled(
        self, names: Iterable[str], health_window: float, timeout: float
    ) -> Outcome:
        """Success once all of `names` are RUNNING/FINISHED (within `timeout` seconds) and none
        goes ERRORED or BROKEN in the `health_window` seconds after; else the first failure."""
        names = list(names)
        for name in names:
            if name not in self._runners:
                return Outcome(False, name, None, f"{name} is not deployed on this device")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            for name in names:
                runner = self._runners[name]
                if runner.state is State.BROKEN or runner.blocked:
                    return Outcome(False, name, runner.state.value, runner.reason)
            if all(self._runners[n].state in SETTLED for n in names):
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                name = next(n for n in names if self._runners[n].state not in SETTLED)
                runner = self._runners[name]
                why = f"not RUNNING after {timeout:g}s"
                if runner.last_error:
                    why += f"; last error: {runner.last_error}"
                return Outcome(False, name, runner.state.value, why)
            await _wait_event(changed, remaining)
        mark = len(self.transitions)
        window_end = loop.time() + health_window
        watched = set(names)
        while True:
            changed = self._changed
            for t in self.transitions[mark:]:
                if t.component in watched and t.state in (State.ERRORED, State.BROKEN):
                    why = f"{t.reason or 'failed'} (within the {health_window:g}s health window)"
                    return Outcome(False, t.component, t.state, why)
            mark = len(self.transitions)
            remaining = window_end - loop.time()
            if remaining <= 0:
                return Outcome(True)
            await _wait_event(changed, remaining)

    # -- internals

    def _record(self, name: str, state: str, reason: str | None) -> None:
        self.transitions.append(Transition(self._clock(), name, state, reason))
        self._notify()
        if self._on_state is not None:
            self._on_state(name, state, reason)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def _find_cycle(graph: Mapping[str, Sequence[tuple[str, str]]]) -> list[str] | None:
    """A dependency cycle as a path (`A -> B -> A`), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep, _ in graph.get(node, ()):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None
