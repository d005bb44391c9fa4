"""One component's lifecycle on the device: its scripts as processes, driven by a state machine.

`ComponentRunner` runs the phases of a Greengrass v2 lifecycle (component recipe reference,
"Lifecycle"; developer guide, "Component lifecycle") and reports every state change through
`on_state(component, state, reason)`, which the agent logs and persists:

- `install()`: NEW -> Install (default Timeout 120 s) -> INSTALLED when it exits 0;
- `start()`: with `Startup`: STARTING -> the script must exit 0 within its Timeout (default 120 s)
  -> RUNNING; what it left running in the background is not watched (only `Shutdown` and the final
  clean-up of its process group touch it). With `Run`: RUNNING as soon as the process runs, no
  timeout unless the recipe gives one; exit 0 -> FINISHED. With neither: FINISHED;
- an error (non-zero exit, timeout, a process that can't start) -> ERRORED -> `Recover` (default
  Timeout 60 s) -> the failed phase again (Install, or Startup/Run). Errors are counted over
  `error_window` seconds; the `max_errors`-th -> BROKEN with the reason, and nothing restarts
  (Recover doesn't run for it: no restart follows it). A recipe we can't run at all (a variable
  that doesn't render, both Startup and Run) is BROKEN at once: retrying can't fix it;
- `stop()`: STOPPING -> `Shutdown` (default Timeout 15 s) -> SIGTERM to every process group the
  component still has, SIGKILL after `kill_grace` seconds -> FINISHED ("stopped"). A BROKEN
  component stays BROKEN (no Shutdown: nothing of it runs), but its groups are cleaned the same.
- `Skipif` (`onpath X`: X is on the script's PATH; `exists X`: X exists, relative to the work
  dir) skips a phase: a skipped Install -> INSTALLED, Startup -> RUNNING, Run -> FINISHED.

Every script runs as `sh -c <script>` in a session (so a process group) of its own, cwd
`<root>/work/<component>`, stdin /dev/null, with the agent's environment + `Lifecycle.Setenv` +
the phase's `Setenv` + `env` (the agent's own variables last: the IPC token and socket path are
not a recipe's to override). Setenv values, like scripts, go through `render` (recipe variables).
stdout/stderr go line by line to the component's log as `[run:stdout] ...`, never to the agent's.
A Run's whole group is stopped when its main process exits (a restart must not meet leftovers);
other phases' leftovers (a Startup's service) live until `stop()`.

`RequiresPrivilege`: there is no separate component user yet, so scripts run as the agent's user;
as root that satisfies it; otherwise the component's log says once that it runs unprivileged.
Processes that leave their session (`setsid`, double-fork daemons) escape the clean-up, as they
would any process-group based supervisor. A group is only signalled while one of its live members
carries this runner's `MODELYARD_LIFECYCLE_TOKEN` (so a group id the kernel gave to someone else
is never hit); a group whose processes all dropped that variable is not cleaned either.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import getpass
import os
import shutil
import signal
import struct
import termios
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psutil

from modelyard.edge.agent.logs import RotatingLog
from modelyard.edge.agent.model import Component, LifecycleStep


class State(StrEnum):
    NEW = "NEW"
    INSTALLED = "INSTALLED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    FINISHED = "FINISHED"
    ERRORED = "ERRORED"
    BROKEN = "BROKEN"


# on_state(component name, state, reason or None)
StateCallback = Callable[[str, str, str | None], None]

# the recipe reference's default Timeout of each phase; None: none (Run runs until it exits)
DEFAULT_TIMEOUTS: dict[str, float | None] = {
    "install": 120.0,
    "startup": 120.0,
    "run": None,
    "shutdown": 15.0,
    "recover": 60.0,
}
TITLES = {p: p.capitalize() for p in DEFAULT_TIMEOUTS}
# an output line longer than this is logged in pieces (a binary blob must not grow memory)
LINE_LIMIT = 64 * 1024
# after a script exits, how long its already-written output may take to reach the log
DRAIN_TIMEOUT = 1.0
# marks our processes, so a process group id the kernel reused is never signalled by mistake
TOKEN_VARIABLE = "MODELYARD_LIFECYCLE_TOKEN"


class LifecycleError(Exception):
    """A lifecycle method was called in a state that doesn't allow it (a bug of the caller)."""


class _Fatal(Exception):
    """The recipe can't be run as written: no retry can help, the component is BROKEN."""


def agent_is_root() -> bool:
    # a function, so tests can pretend either way
    return os.geteuid() == 0


def describe_exit(title: str, returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"{title} was killed by signal {signal.Signals(-returncode).name}"
        return f"{title} was killed by signal {-returncode}"
    return f"{title} exited with code {returncode}"


# --- process groups -------------------------------------------------------------------------


def group_members(pgid: int, token: str) -> list[int]:
    """Live (non-zombie) processes of group `pgid` that carry our `token` in their environment."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []  # the fast path: nothing left at all
    except PermissionError:
        pass
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) != pgid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TOKEN_VARIABLE) == token:
                members.append(proc.pid)
        except (OSError, psutil.Error):
            continue  # gone meanwhile, or not ours to read (so not ours)
    return members


async def _wait_group_gone(pgid: int, token: str, timeout: float) -> bool:
    # not our children (grandchildren are reaped by init), so there is nothing to wait on: poll
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.01
    while group_members(pgid, token):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def _signal_group(pgid: int, token: str, sig: signal.Signals) -> bool:
    """Signal the group if it still holds one of our processes (so `pgid` wasn't reused)."""
    if not group_members(pgid, token):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    return True


async def terminate_group(pgid: int, token: str, grace: float) -> None:
    """SIGTERM the whole group, SIGKILL whatever is left after `grace` seconds."""
    if not _signal_group(pgid, token, signal.SIGTERM):
        return
    if await _wait_group_gone(pgid, token, grace):
        return
    _signal_group(pgid, token, signal.SIGKILL)
    await _wait_group_gone(pgid, token, 5.0)


def _same(protocol: _LinesToLog) -> _LinesToLog:
    return protocol


# --- one script's process and output ----------------------------------------------------------


class _LinesToLog(asyncio.Protocol):
    """Reads one output pipe and logs it line by line with a `[phase:stream]` prefix."""

    def __init__(self, log: RotatingLog, prefix: str) -> None:
        self._log = log
        self._prefix = f"[{prefix}] ".encode()
        self._buffer = bytearray()
        self.transport: asyncio.ReadTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            self._log.write(self._prefix + bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
        if len(self._buffer) > LINE_LIMIT:
            self._flush()

    def eof_received(self) -> bool | None:
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._flush()
        if not self.closed.done():
            self.closed.set_result(None)

    def _flush(self) -> None:
        if self._buffer:
            self._log.write(self._prefix + bytes(self._buffer))
            self._buffer.clear()

    def pending_bytes(self) -> int:
        """Bytes written into the pipe but not read yet (0 once closed)."""
        if self.transport is None or self.closed.done():
            return 0
        pipe = self.transport.get_extra_info("pipe")
        try:
            raw = fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0
        return int(struct.unpack("i", raw)[0])

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Script:
    """A running lifecycle script: its process (a process group leader) and its output pipes."""

    def __init__(
        self, phase: str, proc: asyncio.subprocess.Process, outputs: list[_LinesToLog]
    ) -> None:
        self.phase = phase
        self.pgid = proc.pid  # start_new_session: the leader's pid is the group's id
        self.outputs = outputs
        self._exit = asyncio.ensure_future(proc.wait())

    async def wait(self, timeout: float | None) -> int | None:
        """The exit code, or None if it still runs after `timeout` seconds."""
        done, _ = await asyncio.wait({self._exit}, timeout=timeout)
        return self._exit.result() if done else None

    async def drain(self) -> None:
        """Let the output written before the exit reach the log (not what a leftover writes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT
        for out in self.outputs:
            while out.pending_bytes() and loop.time() < deadline:
                await asyncio.wait({out.closed}, timeout=0.01)
            # EOF may be one loop turn away; then nothing is left to read anyway
            await asyncio.wait({out.closed}, timeout=0)

    def kill_now(self, token: str) -> None:
        _signal_group(self.pgid, token, signal.SIGKILL)

    def close_outputs(self) -> None:
        for out in self.outputs:
            out.close()


@dataclass(frozen=True)
class _Prepared:
    phase: str
    step: LifecycleStep
    script: str
    env: dict[str, str]
    skipped: str | None  # why Skipif skips it, or None


# --- the state machine -------------------------------------------------------------------------


class ComponentRunner:
    """Runs one component's lifecycle; see the module docstring for the semantics."""

    def __init__(
        self,
        component: Component,
        *,
        root: Path,
        render: Callable[[str], str],
        env: Mapping[str, str],
        log: RotatingLog,
        on_state: StateCallback,
        max_errors: int = 3,
        error_window: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        kill_grace: float = 5.0,
    ) -> None:
        if max_errors < 1:
            raise ValueError(f"max_errors must be at least 1, got {max_errors}")
        self.component = component
        self.name = component.name
        self.work_dir = Path(root) / "work" / self.name
        self._render = render
        self._env = dict(env)
        self._log = log
        self._on_state = on_state
        self.max_errors = max_errors
        self.error_window = error_window
        self._clock = clock
        self.kill_grace = kill_grace
        self._token = f"{self.name}:{uuid.uuid4().hex}"

        self._state = State.NEW
        self._reason: str | None = None
        self.last_error: str | None = None
        self.history: list[tuple[float, State, str | None]] = [(clock(), State.NEW, None)]
        self._changed = asyncio.Event()
        self._errors: list[float] = []  # clock() of each error inside the window
        self._groups: dict[int, _Script] = {}  # process groups that may still hold processes
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = False
        self._blocked = False
        self._privilege_noted = False

    # -- public state

    @property
    def state(self) -> State:
        return self._state

    @property
    def reason(self) -> str | None:
        """Why the component is in its current state (errors, skips, "stopped"), if known."""
        return self._reason

    @property
    def blocked(self) -> bool:
        """True once `block()` kept it from starting (a HARD dependency failed)."""
        return self._blocked

    @property
    def active(self) -> bool:
        """Started and not stopped since (its processes may be running)."""
        return self._started

    def close(self) -> None:
        """Close the component's log file (a later line would open it again)."""
        self._log.close()

    async def wait_state(self, *states: str, timeout: float) -> State:
        """Wait until the state is one of `states`; TimeoutError (saying where it is) if not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._state not in states:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.name} is {self._state} ({self._reason or 'no reason'}), "
                    f"not {'/'.join(states)} after {timeout:g}s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self._state

    # -- phases

    async def install(self) -> State:
        """Run Install (retrying through Recover) until INSTALLED or BROKEN; returns the state."""
        if self._started:
            raise LifecycleError(f"{self.name} is {self._state}: stop it before installing it")
        self._stopping = False
        self._blocked = False
        self._errors.clear()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self._state is not State.NEW:
            self._set(State.NEW)
        step = self.component.lifecycle.install
        while not self._stopping:
            if step is None:
                self._set(State.INSTALLED)
                break
            try:
                prepared = self._prepare("install", step)
                if prepared.skipped:
                    self._set(State.INSTALLED, f"Install skipped: {prepared.skipped}")
                    break
                error = await self._execute(prepared)
            except _Fatal as exc:
                self._break(str(exc))
                break
            if self._stopping:
                break
            if error is None:
                self._set(State.INSTALLED)
                break
            if not await self._errored(error):
                break
            self._set(State.NEW, f"retrying Install after: {error}")
        return self._state

    async def start(self) -> State:
        """Start Startup or Run; returns once RUNNING, FINISHED or BROKEN (restarts go on after)."""
        if self._started or self._state not in (State.INSTALLED, State.FINISHED):
            raise LifecycleError(
                f"{self.name} is {self._state}: only an INSTALLED or FINISHED component starts"
            )
        self._stopping = False
        self._started = True
        mark = len(self.history)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"lifecycle:{self.name}")
        settled = (State.RUNNING, State.FINISHED, State.BROKEN)
        while not any(state in settled for _, state, _ in self.history[mark:]):
            if self._supervisor.done():
                break
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({changed, self._supervisor}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
        return self._state

    async def stop(self) -> None:
        """Shutdown, then end every process of the component; FINISHED (BROKEN stays BROKEN)."""
        self._stopping = True
        if self._started and self._state is not State.BROKEN:
            self._set(State.STOPPING)
            step = self.component.lifecycle.shutdown
            if step is not None:
                try:
                    prepared = self._prepare("shutdown", step)
                    error = None if prepared.skipped else await self._execute(prepared)
                except _Fatal as exc:
                    error = str(exc)
                if error:
                    self._note(f"{error}; stopping its processes anyway")
        await self._terminate_all()
        await self._join_supervisor()
        if self._started and self._state is not State.BROKEN:
            self._set(State.FINISHED, "stopped")
        self._started = False
        for script in self._groups.values():
            script.close_outputs()

    def block(self, reason: str) -> None:
        """Keep a component that never started from starting: ERRORED with `reason`, no restart."""
        if self._started:
            raise LifecycleError(f"{self.name} is {self._state}: only one not started is blocked")
        self._blocked = True
        self.last_error = reason
        self._set(State.ERRORED, reason)

    def kill_now(self) -> None:
        """SIGKILL every process group at once (for an agent that is going down hard)."""
        for script in list(self._groups.values()):
            script.kill_now(self._token)

    # -- internals: the supervisor (one per start) ---------------------------------------------

    async def _supervise(self) -> None:
        try:
            while not self._stopping:
                try:
                    error = await self._start_once()
                except _Fatal as exc:
                    self._break(str(exc))
                    return
                if error is None or self._stopping:
                    return
                if not await self._errored(error):
                    return
        except Exception as exc:  # a bug of ours must not leave a component silently stuck
            self._note("internal error:\n" + "".join(traceback.format_exception(exc)))
            self._break(f"internal error of the agent: {exc!r}")

    async def _start_once(self) -> str | None:
        """Startup or Run once; the error, or None when it succeeded (or we are stopping)."""
        lifecycle = self.component.lifecycle
        if lifecycle.startup is not None and lifecycle.run is not None:
            raise _Fatal(
                "Lifecycle: defines both Startup and Run; keep one (Startup for a background "
                "service, Run for the component's own process)"
            )
        if lifecycle.startup is not None:
            prepared = self._prepare("startup", lifecycle.startup)
            if prepared.skipped:
                self._set(State.RUNNING, f"Startup skipped: {prepared.skipped}")
                return None
            self._set(State.STARTING)
            error = await self._execute(prepared)
            if error is not None:
                await self._terminate_all()  # what a failed Startup left must not pile up
                return error
            if not self._stopping:
                self._set(State.RUNNING)
            return None
        if lifecycle.run is not None:
            prepared = self._prepare("run", lifecycle.run)
            if prepared.skipped:
                self._set(State.FINISHED, f"Run skipped: {prepared.skipped}")
                return None
            error = await self._execute(prepared, on_spawned=lambda: self._set(State.RUNNING))
            if error is None and not self._stopping:
                self._set(State.FINISHED)
            return error
        self._set(State.FINISHED, "no Startup or Run to run")
        return None

    async def _errored(self, error: str) -> bool:
        """ERRORED, counted; BROKEN at max_errors, else Recover. True: restart the phase."""
        self.last_error = error
        now = self._clock()
        self._errors = [t for t in self._errors if now - t < self.error_window] + [now]
        self._set(State.ERRORED, error)
        if len(self._errors) >= self.max_errors:
            self._set(
                State.BROKEN,
                f"{error} ({len(self._errors)} errors within {self.error_window:g}s)",
            )
            return False
        step = self.component.lifecycle.recover
        if step is not None and not self._stopping:
            try:
                prepared = self._prepare("recover", step)
                failure = None if prepared.skipped else await self._execute(prepared)
            except _Fatal as exc:
                failure = str(exc)
            if failure:
                self._note(f"{failure}; restarting anyway")
        return not self._stopping

    def _break(self, reason: str) -> None:
        self.last_error = reason
        self._set(State.BROKEN, reason)

    # -- internals: scripts ----------------------------------------------------------------------

    def _prepare(self, phase: str, step: LifecycleStep) -> _Prepared:
        """Render the script and environment, evaluate Skipif; _Fatal on a recipe mistake."""
        title = TITLES[phase]
        lifecycle = self.component.lifecycle
        env = dict(os.environ)
        for where, values in (
            ("Lifecycle.Setenv", lifecycle.setenv),
            (f"{title}.Setenv", step.setenv),
        ):
            for key, value in values.items():
                env[key] = self._render_field(f"{where}.{key}", str(value))
        env.update(self._env)
        env[TOKEN_VARIABLE] = self._token
        script = self._render_field(f"{title}.Script", step.script)
        skipped = None
        if step.skipif is not None:
            value = self._render_field(f"{title}.Skipif", step.skipif.value)
            if step.skipif.kind == "onpath":
                if shutil.which(value, path=env.get("PATH", os.defpath)) is not None:
                    skipped = f"onpath {value}"
            elif (self.work_dir / value).exists():  # an absolute value replaces the work dir
                skipped = f"exists {value}"
        if step.requires_privilege and not agent_is_root() and not self._privilege_noted:
            self._privilege_noted = True
            self._note(
                f"{title} asks for RequiresPrivilege, but the agent runs as "
                f"{getpass.getuser()}, not root: its scripts run as {getpass.getuser()}"
            )
        return _Prepared(phase, step, script, env, skipped)

    def _render_field(self, field: str, text: str) -> str:
        try:
            return self._render(text)
        except Exception as exc:  # whatever the interpolation raises, it's the recipe's fault
            raise _Fatal(f"Lifecycle.{field}: {exc}") from exc

    async def _execute(
        self, prepared: _Prepared, on_spawned: Callable[[], None] | None = None
    ) -> str | None:
        """Run one script to its end; the error ("Install exited with code 1"), or None."""
        title = TITLES[prepared.phase]
        timeout = prepared.step.timeout
        if timeout is None:
            timeout = DEFAULT_TIMEOUTS[prepared.phase]
        try:
            script = await self._spawn(prepared)
        except OSError as exc:
            return f"{title} could not start: {exc}"
        if self._stopping and prepared.phase != "shutdown":
            script.kill_now(self._token)  # stop() came while it was being spawned
        elif on_spawned is not None:
            on_spawned()
        try:
            returncode = await script.wait(timeout)
            if returncode is None:
                self._note(f"{title} timed out after {timeout:g}s: stopping it")
                await terminate_group(script.pgid, self._token, self.kill_grace)
                error: str | None = f"{title} timed out after {timeout:g}s"
            else:
                error = None if returncode == 0 else describe_exit(title, returncode)
            await script.drain()
            if prepared.phase == "run":
                # the Run's group is the component's process tree: it ends with its main process
                await terminate_group(script.pgid, self._token, self.kill_grace)
        except BaseException:
            script.kill_now(self._token)  # cancelled: leave nothing behind
            raise
        if not group_members(script.pgid, self._token):
            self._groups.pop(script.pgid, None)
            script.close_outputs()
        return error

    async def _spawn(self, prepared: _Prepared) -> _Script:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        pipes = [os.pipe(), os.pipe()]
        try:
            proc = await asyncio.create_subprocess_exec(
                "sh",
                "-c",
                prepared.script,
                cwd=self.work_dir,
                env=prepared.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=pipes[0][1],
                stderr=pipes[1][1],
                start_new_session=True,  # its own group: stop/timeout reach the whole tree
            )
        except BaseException:
            for read_end, _ in pipes:
                os.close(read_end)
            raise
        finally:
            for _, write_end in pipes:
                os.close(write_end)
        loop = asyncio.get_running_loop()
        outputs = []
        for (read_end, _), stream in zip(pipes, ("stdout", "stderr"), strict=True):
            reader = _LinesToLog(self._log, f"{prepared.phase}:{stream}")
            await loop.connect_read_pipe(
                functools.partial(_same, reader), os.fdopen(read_end, "rb", 0)
            )
            outputs.append(reader)
        script = _Script(prepared.phase, proc, outputs)
        self._groups[script.pgid] = script
        return script

    async def _terminate_all(self) -> None:
        groups = list(self._groups)
        await asyncio.gather(
            *(terminate_group(pgid, self._token, self.kill_grace) for pgid in groups)
        )
        for pgid in groups:
            # the script's own _execute may have forgotten it meanwhile
            if not group_members(pgid, self._token) and (script := self._groups.pop(pgid, None)):
                script.close_outputs()

    async def _join_supervisor(self) -> None:
        task, self._supervisor = self._supervisor, None
        if task is None or task.done():
            return
        # its process is gone, so it is about to return; a stuck one is cancelled
        await asyncio.wait({task}, timeout=self.kill_grace + DRAIN_TIMEOUT + 1.0)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- internals: state and log ------------------------------------------------------------------

    def _set(self, state: State, reason: str | None = None) -> None:
        self._state = state
        self._reason = reason
        self.history.append((self._clock(), state, reason))
        self._note(f"{state}" + (f": {reason}" if reason else ""))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        try:
            self._on_state(self.name, state.value, reason)
        except Exception as exc:  # the agent's callback must not break the state machine
            self._note(f"on_state callback failed: {exc!r}")

    def _note(self, text: str) -> None:
        self._log.write(f"[lifecycle] {text}")

    def __repr__(self) -> str:
        return f"ComponentRunner({self.component.recipe.ref!r}, state={self._state})"
