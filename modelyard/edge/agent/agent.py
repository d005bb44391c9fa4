"""The agent process: runs a device's components and applies its deployments, one at a time.

`Agent(root).run()` is what `modelyard-agent run` does, in this order:

1. take `<root>/agent.lock` (flock): one agent per root; a second one is refused, naming the pid;
2. clean the store's and the journal's temporary files, and kill what an agent that died
   (kill -9, power cut) left running: process groups recorded in `status.json` (pid + start
   time, so a reused pid is never hit) and any process that carries this root's marker variable
   but not this run's (a component spawned after the last status write);
3. settle a deployment that was IN_PROGRESS when the agent died (see "Crash safety");
4. start the IPC broker on `<root>/ipc.socket`, then the components of `current.json`: after a
   restart the device runs what it ran;
5. take deployment documents from the queue, in order, until SIGTERM/SIGINT, which stops every
   component (dependents first) and closes the broker.

A deployment: resolve versions and manifests, fetch and verify every artifact, render every
lifecycle script and read every accessControl policy -- all before anything stops, so a bad
recipe, a digest mismatch or an unknown component fails it with nothing changed. Then, with
NOTIFY_COMPONENTS, subscribed components are told and may defer (each deferral postpones the
update by its recheck time, then they are asked again; in all at most `max_defer` seconds and
`MAX_DEFER_ROUNDS` rounds, after which the update goes ahead and the log says so). Then the
removed and changed components stop (dependents first), the new set starts in dependency
order, and the deployment succeeds if every component is RUNNING (or FINISHED) and stays
healthy for `health_window` seconds. On failure, ROLLBACK stops what the deployment started
and restores the previous components with exactly their previous configuration (the journal's
snapshot); DO_NOTHING leaves the device as the deployment left it.

Crash safety: `current.json` is the commit point. It changes only when a deployment's result
is final (success, or failure under DO_NOTHING), before the record says so. A record still
IN_PROGRESS after a restart therefore means either "committed" (current.json names it: the
record is completed) or "not committed": the device is rolled back to the record's snapshot and
the deployment FAILED. We roll back rather than re-apply because the snapshot is the only state
known to have run healthily, a re-apply could crash the agent again (a crash loop), and the
user sees exactly what happened and can deploy again. Either way the device runs one
consistent set of versions, never a mix.

Every component process gets `MODELYARD_AGENT_ROOT`/`MODELYARD_AGENT_RUN` (what the clean-up
above looks for), its IPC token and socket path, `AWS_IOT_THING_NAME` (as Greengrass sets it)
and its own name and version. `<root>/status.json` (components, versions, states, the
deployment in progress, the processes) is rewritten on every change, for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from modelyard.edge.agent.components import ComponentManager, Outcome, runner_factory
from modelyard.edge.agent.deployments import (
    DO_NOTHING,
    NOTIFY_COMPONENTS,
    Deployment,
    Plan,
    changes,
    check_plan,
    components_for_state,
    dependencies_of,
    parse_deployment,
    plan_deployment,
)
from modelyard.edge.agent.errors import AgentError
from modelyard.edge.agent.ipc_broker import IpcBroker, IpcBrokerError
from modelyard.edge.agent.journal import (
    FAILED,
    IN_PROGRESS,
    QUEUED,
    SUCCEEDED,
    DeploymentRecord,
    DeviceState,
    Journal,
    Queued,
    check_deployment_id,
    now_iso,
    read_json,
    write_json_atomically,
)
from modelyard.edge.agent.lifecycle import State
from modelyard.edge.agent.logs import RotatingLog, agent_log_path
from modelyard.edge.agent.model import Component, Platform
from modelyard.edge.agent.platform import current_platform, select_manifest
from modelyard.edge.agent.policy import Policies, PolicyError
from modelyard.edge.agent.store import ComponentStore
from modelyard.edge.agent.variables import ComponentPaths, VariableContext, interpolate
from modelyard.edge.agent.versions import resolve_versions

AGENT_ROOT_ENV = "MODELYARD_AGENT_ROOT"
AGENT_RUN_ENV = "MODELYARD_AGENT_RUN"
COMPONENT_NAME_ENV = "MODELYARD_COMPONENT_NAME"
COMPONENT_VERSION_ENV = "MODELYARD_COMPONENT_VERSION"
THING_NAME_ENV = "AWS_IOT_THING_NAME"
LOCK_NAME = "agent.lock"
STATUS_NAME = "status.json"
SOCKET_NAME = "ipc.socket"
MAX_DEFER = 3600.0  # seconds components may postpone one deployment, in all
MAX_DEFER_ROUNDS = 100  # update notices per deployment (a 1 ms deferral loop ends too)
LOCK_RETRY = 0.5  # seconds: a CLI probing the lock holds it for microseconds

# deployment phases, as the journal and status.json show them
RESOLVING = "RESOLVING"
FETCHING = "FETCHING"
NOTIFYING = "NOTIFYING"
STOPPING = "STOPPING"
STARTING = "STARTING"
HEALTH_CHECK = "HEALTH_CHECK"
COMMITTING = "COMMITTING"
ROLLING_BACK = "ROLLING_BACK"

log = logging.getLogger("modelyard.edge.agent")


class AgentRunningError(AgentError):
    """Another agent already runs on this root."""

    exit_code = 4


class RootError(AgentError):
    """The root folder can't be used (not a folder, open to other users)."""

    exit_code = 2


def lock_path(root: Path) -> Path:
    return root / LOCK_NAME


def status_path(root: Path) -> Path:
    return root / STATUS_NAME


def socket_path(root: Path) -> Path:
    return root / SOCKET_NAME


# --- the root's lock ---------------------------------------------------------------------------


def acquire_lock(root: Path) -> int:
    """Lock the root for this process (the fd stays open while the agent runs); refuse if
    another agent holds it. The lock dies with the process, kill -9 included."""
    fd = os.open(lock_path(root), os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children
    deadline = time.monotonic() + LOCK_RETRY
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)  # a CLI's probe, gone in a moment
                continue
            pid = _read_pid(fd)
            os.close(fd)
            who = f" (pid {pid})" if pid else ""
            raise AgentRunningError(
                f"another modelyard-agent{who} is already running on {root}",
                hint="stop it first (kill -TERM), or give this one another --root",
            ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def running_agent(root: Path) -> int | None:
    """The pid of the agent running on `root` (0 if unknown), or None when none runs."""
    try:
        fd = os.open(lock_path(root), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    return None


def read_status(root: Path) -> dict[str, Any] | None:
    """The last `status.json` an agent wrote on `root`, or None."""
    path = status_path(root)
    if not path.exists():
        return None
    data = read_json(path)
    return data if isinstance(data, dict) else None


def prepare_root(root: Path) -> Path:
    """The root folder, created private (0700): it holds the IPC socket, which must be."""
    root = root.expanduser().resolve()
    if not root.exists():
        root.mkdir(mode=0o700, parents=True)
        os.chmod(root, 0o700)  # the umask may have removed bits; be exact
    if not root.is_dir():
        raise RootError(f"the agent's root {root} is not a folder", hint="give a folder")
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & 0o077:
        raise RootError(
            f"the agent's root {root} is open to other users (mode {mode:o}), and it holds the "
            "components' IPC socket",
            hint=f"chmod 700 {root}, or give a new folder as --root",
        )
    return root


# --- left-over processes -------------------------------------------------------------------------


def processes_of_run(run_id: str) -> list[dict[str, Any]]:
    """The processes started for the agent run `run_id`: pid, start time, component."""
    found = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(AGENT_RUN_ENV) == run_id:
            found.append(
                {
                    "pid": proc.pid,
                    "createTime": proc.info["create_time"],
                    "component": env.get(COMPONENT_NAME_ENV),
                }
            )
    return found


def kill_leftovers(
    root: Path, recorded: Iterable[Mapping[str, Any]], own_run: str, grace: float
) -> list[int]:
    """Kill the process groups an earlier agent of `root` left; returns the pids found."""
    found: dict[int, psutil.Process] = {}
    for entry in recorded:
        with contextlib.suppress(psutil.Error, KeyError, TypeError, ValueError):
            proc = psutil.Process(int(entry["pid"]))
            if abs(proc.create_time() - float(entry["createTime"])) < 0.05:  # not a reused pid
                found[proc.pid] = proc
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(AGENT_ROOT_ENV) == str(root) and env.get(AGENT_RUN_ENV) != own_run:
            found[proc.pid] = proc
    ours = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    own_group = os.getpgrp()
    targets = {pid: proc for pid, proc in found.items() if pid not in ours}
    groups = set()
    for pid in targets:
        with contextlib.suppress(OSError):
            pgid = os.getpgid(pid)
            if pgid not in (own_group, 0, 1):
                groups.add(pgid)
    _signal_all(groups, targets.values(), signal.SIGTERM)
    alive = _wait_gone(targets.values(), grace)
    if alive:
        _signal_all(groups, alive, signal.SIGKILL)
        _wait_gone(alive, 5.0)
    return sorted(targets)


def _wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes are gone (a zombie counts as gone: it runs nothing, and
    whoever reaps it is not us); the ones still alive after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    delay = 0.01
    while alive:
        alive = [p for p in alive if _alive(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(delay)  # not our children: nothing to wait on but their disappearance
        delay = min(delay * 2, 0.1)
    return alive


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_all(groups: Iterable[int], procs: Iterable[psutil.Process], sig: int) -> None:
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, sig)
    for proc in procs:  # also those that left their group
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


# --- the agent's log -----------------------------------------------------------------------------


class _LogHandler(logging.Handler):
    """Python logging (the agent's and the broker's) into `<root>/logs/modelyard-agent.log`."""

    def __init__(self, log_file: RotatingLog) -> None:
        super().__init__(logging.INFO)
        self.log_file = log_file

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log_file.write(f"{record.levelname} {self.format(record)}")
        except Exception:
            self.handleError(record)


# --- the agent -----------------------------------------------------------------------------------


class Agent:
    """One device's agent; see the module docstring. `await run()` until SIGTERM/SIGINT."""

    def __init__(
        self,
        root: str | Path,
        *,
        thing_name: str | None = None,
        health_window: float = 10.0,
        settle_timeout: float = 60.0,
        kill_grace: float = 5.0,
        max_errors: int = 3,
        error_window: float = 3600.0,
        poll_interval: float = 0.2,
        max_defer: float = MAX_DEFER,
        platform: Platform | None = None,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.thing_name = thing_name or socket.gethostname()
        self.health_window = health_window
        self.settle_timeout = settle_timeout
        self.kill_grace = kill_grace
        self.max_errors = max_errors
        self.error_window = error_window
        self.poll_interval = poll_interval
        self.max_defer = max_defer
        self.platform = platform or current_platform()
        self.run_id = uuid.uuid4().hex
        self.journal = Journal(self.root)
        self.started_at = now_iso()
        self._store: ComponentStore | None = None
        self._broker: IpcBroker | None = None
        self._manager: ComponentManager | None = None
        self._state = DeviceState()  # what the device runs now
        self._components: dict[str, Component] = {}
        self._configs: dict[str, Mapping[str, Any]] = {}
        self._paths: dict[str, ComponentPaths] = {}
        self._deployment: DeploymentRecord | None = None
        self._problems: dict[str, str] = {}  # components that could not even be loaded
        self._status_pending = False
        self._running = False

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT; AgentError if the agent can't start."""
        self.root = prepare_root(self.root)
        lock = acquire_lock(self.root)
        handler = _LogHandler(RotatingLog(agent_log_path(self.root)))
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        main = asyncio.create_task(self._main(), name="agent")
        stopper = asyncio.create_task(stop.wait(), name="agent-stop")
        try:
            await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if main.done():
                try:
                    main.result()  # the agent could not start, or failed: raise why
                except AgentError:
                    raise
                except Exception:
                    log.exception("the agent failed")
                    raise
            else:
                log.info("stopping: signal received")
                main.cancel()
                await asyncio.gather(main, return_exceptions=True)
        finally:
            stopper.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            try:
                await self._shutdown()
            finally:
                log.info("agent stopped")
                log.removeHandler(handler)
                handler.log_file.close()
                os.close(lock)

    async def _main(self) -> None:
        log.info(
            "agent starting: root %s, pid %d, thing %s", self.root, os.getpid(), self.thing_name
        )
        self.journal.ensure()
        self.journal.cleanup_temporary()
        store = self._store = ComponentStore(self.root)
        await asyncio.to_thread(store.cleanup_temporary)
        await self._kill_leftovers()
        self._recover()
        self._broker = IpcBroker(
            socket_path(self.root),
            on_denied=self._denied,
            configuration=self._configuration_of,
        )
        try:
            await self._broker.start()
        except IpcBrokerError as exc:
            self._broker = None
            raise AgentError(f"cannot start the IPC broker: {exc}") from None
        factory = runner_factory(
            self.root,
            render_for=self._render_for,
            env_for=self._env_for,
            max_errors=self.max_errors,
            error_window=self.error_window,
            kill_grace=self.kill_grace,
        )
        self._manager = ComponentManager(self.root, runner_factory=factory, on_state=self._on_state)
        self._running = True
        self._write_status()
        await self._start_current()
        log.info("agent started: %s", self._state.describe())
        await self._serve_queue()

    async def _shutdown(self) -> None:
        if self._manager is not None:
            await self._manager.shutdown()
        self._running = False
        with contextlib.suppress(OSError):
            self._write_status()
        if self._broker is not None:
            await self._broker.close()

    async def _kill_leftovers(self) -> None:
        recorded: list[Mapping[str, Any]] = []
        with contextlib.suppress(AgentError, OSError):
            status = read_status(self.root) or {}
            processes = status.get("processes")
            recorded = (
                [p for p in processes if isinstance(p, dict)] if isinstance(processes, list) else []
            )
        killed = await asyncio.to_thread(
            kill_leftovers, self.root, recorded, self.run_id, self.kill_grace
        )
        if killed:
            log.warning(
                "stopped %d process(es) left by an earlier agent: %s",
                len(killed),
                ", ".join(map(str, killed)),
            )

    def _recover(self) -> None:
        """Settle deployments an earlier agent left IN_PROGRESS (see "Crash safety")."""
        current = self.journal.current()
        for record in self.journal.records():
            if record.status != IN_PROGRESS:
                continue
            if current.last_deployment_id == record.deployment_id:  # committed, not recorded
                status = FAILED if record.reason else SUCCEEDED
                reason = record.reason
            else:
                snapshot = record.snapshot if record.snapshot is not None else current
                if snapshot != current:
                    self.journal.write_current(snapshot)
                    current = snapshot
                self._state = current
                status = FAILED
                why = f"the agent stopped during the deployment (phase {record.phase})"
                reason = f"{record.reason}; {why}" if record.reason else why
                reason += f"; rolled back to {snapshot.describe()}"
            self._finish(record, status, reason)
        self._state = current

    async def _start_current(self) -> None:
        """Start what current.json says the device runs (what it ran before a restart)."""
        store = self._require_store()
        components: dict[str, Component] = {}
        problems: dict[str, str] = {}
        for name, version in sorted(self._state.components.items()):
            try:
                components[name] = select_manifest(store.recipe(name, version), self.platform)
            except AgentError as exc:
                log.error("cannot start %s %s: %s", name, version, exc)
                problems[name] = f"cannot start: {exc}"
        deps = dependencies_of(components)
        missing = True
        while missing:  # a component whose dependency can't start can't start either
            missing = False
            for name in list(components):
                lacking = [d for d, _ in deps[name] if d not in components]
                if lacking:
                    log.error("cannot start %s: its dependency %s can't start", name, lacking[0])
                    problems[name] = f"cannot start: its dependency {lacking[0]} can't start"
                    del components[name]
                    missing = True
        self._adopt(self._state, components)
        self._problems = problems  # shown in status.json until a deployment replaces the state
        await self._start(sorted(components), components)

    async def _serve_queue(self) -> None:
        seen: set[str] = set()
        while True:
            items = self.journal.queued()
            for item in items[1:]:
                if item.deployment_id not in seen:  # show the waiting ones as QUEUED
                    seen.add(item.deployment_id)
                    self._record_queued(item)
            if items:
                await self._take(items[0])
                continue
            await asyncio.sleep(self.poll_interval)

    def _record_queued(self, item: Queued) -> None:
        with contextlib.suppress(AgentError):
            check_deployment_id(item.deployment_id)
            if self.journal.record(item.deployment_id) is None:
                document = item.document if isinstance(item.document, dict) else {}
                record = DeploymentRecord(item.deployment_id, document)
                record.created_at = item.queued_at or record.created_at
                self.journal.save(record)

    # -- one deployment -----------------------------------------------------------------------

    async def _take(self, item: Queued) -> None:
        deployment_id = item.deployment_id
        try:
            check_deployment_id(deployment_id)
            existing = self.journal.record(deployment_id)
        except AgentError:
            deployment_id, existing = f"invalid-{uuid.uuid4().hex[:12]}", None
        if existing is not None and existing.status != QUEUED:
            log.warning(
                "deployment %s is already %s: dropping its queued copy %s",
                deployment_id,
                existing.status,
                item.path.name,
            )
            self.journal.dequeue(item.path)
            return
        document = item.document if isinstance(item.document, dict) else {}
        record = existing or DeploymentRecord(deployment_id, document)
        record.document = document
        record.created_at = item.queued_at or record.created_at
        deployment: Deployment | None = None
        error = item.error
        if error is None:
            try:
                deployment = parse_deployment(item.document)
            except AgentError as exc:
                error = f"invalid deployment document: {exc}"
        if deployment is None:
            self.journal.save(record)
            self.journal.dequeue(item.path)
            self._finish(record, FAILED, f"{error}; nothing was changed")
            return
        record.status = IN_PROGRESS
        record.phase = RESOLVING
        record.started_at = now_iso()
        record.snapshot = self._state
        self.journal.save(record)  # first the record, then the queue entry goes: never lost
        self.journal.dequeue(item.path)
        self._deployment = record
        log.info("deployment %s: started", deployment_id)
        try:
            await self._apply(deployment, record)
        finally:
            self._deployment = None
            self._schedule_status()

    async def _apply(self, deployment: Deployment, record: DeploymentRecord) -> None:
        snapshot = self._state
        try:
            plan = await self._prepare(deployment, record)
        except AgentError as exc:
            self._finish(record, FAILED, f"{exc}; nothing was changed")
            return
        except Exception as exc:  # a bug or an OS error: still nothing changed, say so
            log.exception("deployment %s: preparing failed", deployment.deployment_id)
            self._finish(record, FAILED, f"internal error: {exc!r}; nothing was changed")
            return
        notified = False
        failure: str | None = None
        try:
            if (plan.stop or plan.start) and deployment.policies.update_action == NOTIFY_COMPONENTS:
                self._phase(record, NOTIFYING)
                notified = True
                await self._notify(deployment, record)
            self._phase(record, STOPPING)
            await self._stop(plan.stop)
            self._phase(record, STARTING)
            self._adopt(plan.target, plan.components)
            await self._start(plan.start, plan.components)
            self._phase(record, HEALTH_CHECK)
            outcome = await self._manager_().wait_settled(
                sorted(plan.target.components), self.health_window, self.settle_timeout
            )
            failure = None if outcome else await self._failure(outcome, plan.target)
        except Exception as exc:  # the device may be half changed: treat it as a failure
            log.exception("deployment %s failed", deployment.deployment_id)
            failure = f"{exc}"
        record.outcomes = self._outcomes(plan.target)
        if failure is None:
            self._commit(record, plan.target, None)
            await self._cleanup_store()
        elif deployment.policies.failure_handling == DO_NOTHING:
            reason = f"{failure}; left as is (failureHandlingPolicy DO_NOTHING)"
            self._commit(record, plan.target, reason)
        else:
            record.reason = failure
            self._phase(record, ROLLING_BACK)
            problem = await self._rollback(snapshot, plan.target)
            reason = f"{failure}; rolled back to {snapshot.describe()}"
            if problem:
                reason += f"; the rollback failed too: {problem}"
            record.outcomes = self._outcomes(snapshot)
            self._finish(record, FAILED, reason)
        if notified and self._broker is not None:
            self._broker.notify_updated(deployment.deployment_id)

    async def _prepare(self, deployment: Deployment, record: DeploymentRecord) -> Plan:
        """Everything that can fail before the device changes: versions, artifacts, scripts."""
        store = self._require_store()
        available = await asyncio.to_thread(store.available)
        plan = plan_deployment(
            deployment, self._state, available, platform=self.platform, unhealthy=self._unhealthy()
        )
        record.target = plan.target
        self._phase(record, FETCHING)
        for name in plan.start:
            await asyncio.to_thread(
                store.fetch_artifacts, plan.components[name], artifact_dirs=deployment.artifact_dirs
            )
        paths = {name: store.paths(c) for name, c in plan.components.items()}
        check_plan(
            plan.components,
            plan.target.configuration,
            paths,
            thing_name=self.thing_name,
            root_path=str(self.root),
        )
        return plan

    async def _notify(self, deployment: Deployment, record: DeploymentRecord) -> None:
        """Tell subscribed components; wait out their deferrals (bounded: module docstring)."""
        broker = self._broker
        if broker is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_defer
        timeout = deployment.policies.update_timeout
        for _ in range(MAX_DEFER_ROUNDS):
            deferrals = await broker.notify_update(deployment.deployment_id, timeout)
            if not deferrals:
                return
            for deferral in deferrals:
                record.deferrals.append(
                    {
                        "component": deferral.component,
                        "recheckAfterMs": deferral.recheck_after_ms,
                        "message": deferral.message,
                        "at": now_iso(),
                    }
                )
                log.info(
                    "deployment %s: %s defers the update by %d ms: %s",
                    deployment.deployment_id,
                    deferral.component,
                    deferral.recheck_after_ms,
                    deferral.message or "(no message)",
                )
            self.journal.save(record)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(max(d.recheck_after_ms for d in deferrals) / 1000, remaining))
        log.warning(
            "deployment %s: components deferred it for %gs or %d times: updating anyway",
            deployment.deployment_id,
            self.max_defer,
            MAX_DEFER_ROUNDS,
        )

    async def _rollback(self, snapshot: DeviceState, failed: DeviceState) -> str | None:
        """Back to the snapshot's components and configuration; None, or why it failed."""
        try:
            components = components_for_state(
                snapshot, self._require_store().recipe, platform=self.platform
            )
            stop, start = changes(failed, snapshot, dependencies_of(components), self._unhealthy())
            await self._stop(stop)
            self._adopt(snapshot, components)
            await self._start(start, components)
            outcome = await self._manager_().wait_settled(
                sorted(snapshot.components), self.health_window, self.settle_timeout
            )
        except Exception as exc:
            log.exception("the rollback failed")
            return str(exc)
        return None if outcome else await self._failure(outcome, snapshot)

    def _commit(self, record: DeploymentRecord, target: DeviceState, reason: str | None) -> None:
        record.reason = reason
        self._phase(record, COMMITTING)
        self.journal.write_current(target)  # the commit point (see "Crash safety")
        self._finish(record, FAILED if reason else SUCCEEDED, reason)

    def _finish(self, record: DeploymentRecord, status: str, reason: str | None) -> None:
        record.status = status
        record.phase = None
        record.reason = reason
        record.finished_at = now_iso()
        self.journal.save(record)
        if status == SUCCEEDED:
            log.info("deployment %s: SUCCEEDED: %s", record.deployment_id, self._state.describe())
        else:
            log.warning("deployment %s: %s: %s", record.deployment_id, status, reason)

    def _phase(self, record: DeploymentRecord, phase: str) -> None:
        record.phase = phase
        self.journal.save(record)
        log.info("deployment %s: %s", record.deployment_id, phase)
        self._schedule_status()

    async def _cleanup_store(self) -> None:
        """Remove the store's versions that neither run nor are wanted by a queued deployment."""
        store = self._require_store()

        def work() -> list[str]:
            with self.journal.lock():  # the CLI adds recipes for its deployment under it
                keep = set(self._state.components.items())
                available = store.available()
                for item in self.journal.queued():
                    try:
                        wanted = parse_deployment(item.document)
                        recipes = resolve_versions(wanted.roots, available)
                    except AgentError:
                        return []  # can't tell what it needs: keep everything this time
                    keep |= {(r.name, r.version) for r in recipes.values()}
                return store.remove_unused(keep)

        try:
            removed = await asyncio.to_thread(work)
        except (AgentError, OSError) as exc:
            log.warning("cleaning the component store failed: %s", exc)
            return
        if removed:
            log.info("removed from the store: %s", ", ".join(removed))

    # -- components ---------------------------------------------------------------------------

    def _adopt(self, state: DeviceState, components: Mapping[str, Component]) -> None:
        """Make `state` the device's: what renders, what IPC serves, what the status shows."""
        store = self._require_store()
        if self._broker is not None:
            for name in set(self._state.components) - set(state.components):
                self._broker.unregister(name)
        self._state = state
        self._problems = {}
        self._components = dict(components)
        # new dicts, never changed in place: a runner's variables keep the values it started with
        self._configs = {name: dict(config) for name, config in state.configuration.items()}
        self._paths = {name: store.paths(c) for name, c in components.items()}
        self._schedule_status()

    async def _stop(self, names: Sequence[str]) -> None:
        manager = self._manager_()
        present = [name for name in names if name in manager.runners]
        if present:
            await manager.stop(present)
            manager.forget(present)  # started again, they get new runners; removed, none

    async def _start(self, names: Sequence[str], components: Mapping[str, Component]) -> None:
        if not names:
            return
        broker = self._broker
        for name in names:
            try:
                policies = Policies.from_configuration(name, self._configs.get(name, {}))
            except PolicyError as exc:  # checked before deployments; a hand-edited state
                log.error("%s: ignoring its accessControl: %s", name, exc)
                policies = Policies()
            if broker is not None:
                broker.register(name, policies)
        chosen = {name: components[name] for name in names}
        await self._manager_().start_all(list(chosen.values()), dependencies_of(chosen))

    def _unhealthy(self) -> set[str]:
        """Components of the current state that don't run as they should: they restart."""
        runners = self._manager.runners if self._manager is not None else {}
        return {
            name
            for name in self._state.components
            if (runner := runners.get(name)) is None
            or not runner.active
            or runner.blocked
            or runner.state is State.BROKEN
        }

    def _render_for(self, component: Component) -> Callable[[str], str]:
        context = VariableContext.for_component(
            component,
            paths=self._paths,
            configuration=self._configs,
            thing_name=self.thing_name,
            root_path=str(self.root),
        )
        return lambda text: interpolate(text, context)

    def _env_for(self, component: Component) -> dict[str, str]:
        env = self._broker.environment(component.name) if self._broker is not None else {}
        return {
            **env,
            AGENT_ROOT_ENV: str(self.root),
            AGENT_RUN_ENV: self.run_id,
            COMPONENT_NAME_ENV: component.name,
            COMPONENT_VERSION_ENV: component.version,
            THING_NAME_ENV: self.thing_name,
        }

    def _on_state(self, name: str, state: str, reason: str | None) -> None:
        component = self._components.get(name)
        version = f" {component.version}" if component is not None else ""
        log.info("%s%s: %s%s", name, version, state, f" ({reason})" if reason else "")
        self._schedule_status()

    def _configuration_of(self, component: str) -> Mapping[str, Any] | None:
        # looked up at each call: `_adopt` replaces the dict, it never changes it in place
        return self._configs.get(component)

    def _denied(self, component: str, operation: str, topic: str) -> None:
        log.warning("denied: %s may not %s on %s", component, operation.rpartition("#")[2], topic)

    async def _failure(self, outcome: Outcome, state: DeviceState) -> str:
        """Why the deployment failed: "NAME VERSION: reason". A component that errored in the
        health window is restarting; give it one more window to show where that ends (BROKEN,
        after `max_errors` errors, says more than its first error)."""
        name = outcome.component or "?"
        reason = outcome.reason or outcome.state or "failed"
        runner = self._manager_().runners.get(name)
        if runner is not None and outcome.state == State.ERRORED and not runner.blocked:
            with contextlib.suppress(TimeoutError):
                await runner.wait_state(State.BROKEN, timeout=self.health_window)
                reason = runner.reason or reason
        version = state.components.get(name)
        return f"{name} {version}: {reason}" if version else f"{name}: {reason}"

    def _outcomes(self, state: DeviceState) -> dict[str, dict[str, Any]]:
        states = self._manager.states() if self._manager is not None else {}
        return {
            name: {
                "version": version,
                "state": states.get(name, ("NEW", None))[0],
                "reason": states.get(name, ("NEW", None))[1],
            }
            for name, version in sorted(state.components.items())
        }

    def _require_store(self) -> ComponentStore:
        if self._store is None:
            raise AgentError("the agent is not started")
        return self._store

    def _manager_(self) -> ComponentManager:
        if self._manager is None:
            raise AgentError("the agent is not started")
        return self._manager

    # -- status.json --------------------------------------------------------------------------

    def _schedule_status(self) -> None:
        """Rewrite status.json soon: once per loop turn however many states changed."""
        if self._status_pending:
            return
        self._status_pending = True
        try:
            asyncio.get_running_loop().call_soon(self._flush_status)
        except RuntimeError:  # no loop: write now
            self._flush_status()

    def _flush_status(self) -> None:
        self._status_pending = False
        try:
            self._write_status()
        except OSError as exc:
            log.warning("cannot write %s: %s", status_path(self.root), exc)

    def _write_status(self) -> None:
        states = self._manager.states() if self._manager is not None else {}
        components = {}
        for name, version in sorted(self._state.components.items()):
            state, reason = states.get(name, ("NEW", None))
            if name in self._problems:
                state, reason = State.ERRORED.value, self._problems[name]
            components[name] = {
                "version": version,
                "state": state,
                "reason": reason,
                "root": name in self._state.roots,
            }
        record = self._deployment
        data = {
            "agent": {
                "pid": os.getpid(),
                "runId": self.run_id,
                "root": str(self.root),
                "thingName": self.thing_name,
                "startedAt": self.started_at,
                "running": self._running,
            },
            "updatedAt": now_iso(),
            "components": components,
            "deployment": None
            if record is None
            else {"deploymentId": record.deployment_id, "phase": record.phase},
            "lastDeploymentId": self._state.last_deployment_id,
            # what a restarted agent kills if this one dies (pid + start time: no reused pid)
            "processes": processes_of_run(self.run_id) if self._running else [],
        }
        write_json_atomically(status_path(self.root), data, durable=False)
