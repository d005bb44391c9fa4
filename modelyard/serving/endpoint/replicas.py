"""The replica processes of one variant of an endpoint: spawn, readiness, restart, drain, stop.

A replica is a `modelyard serve` child process serving on a socket this side bound and listens
on (port 0 of 127.0.0.1, passed down with `--fd`): the port is known before the child even
starts, nobody else can take it in between, and a restarted replica simply gets a new socket.
Children run in their own process group (one SIGKILL reaches anything they started) and with
`--exit-with-parent=<our pid>`, so that a killed supervisor leaves no replica behind (the pid is
given rather than read by the child: a supervisor dying while the child starts is noticed too).

The supervisor owns one `ReplicaSet` per variant and drives it from its asyncio loop:
`scale_to` (start missing slots; drain, then stop extra ones) and `tick` about twice a second
(reap dead children and restart them after an exponential backoff, or give a slot up as failed
once it crash-loops; probe `GET /ping` of starting replicas).

Processes are `subprocess.Popen` objects polled in `tick` rather than asyncio subprocesses:
exit detection then depends on no child watcher (whose kinds and policies differ between
Python versions and event loops, and one of which waits on every child of the process), a
death is noticed within one tick, which is all restarts need, and polling (`waitid` with
WNOHANG) never blocks the loop. Spawning itself is a fork+exec (vfork), quick enough inline.

Logs: each slot appends its stdout and stderr to `<log_dir>/<variant>-<slot>.log`. A log over
the limit is rotated (`.1` .. `.3`, the oldest dropped) by renaming when its replica (re)starts,
and by copy-then-truncate when `tick` sees it over the limit while the replica runs: the child
keeps its O_APPEND descriptor, so truncating in place is safe, at the price of losing what the
child writes during the copy (done in a thread: the loop never waits on disk).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelyard.errors import ConfigError, StateConflict

State = Literal["starting", "ready", "draining", "stopped", "failed"]
Drain = Callable[["Replica"], Awaitable[None]]

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_KEEP = 3  # rotated files kept: .1 (newest) to .3
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
PROBE_TIMEOUT = 0.5  # seconds a readiness probe may take
BACKLOG = 2048  # what uvicorn listens with; the child's server keeps it
# serve options the ReplicaSet sets itself, or that replicas must not get (API keys: the
# endpoint's front proxy checks them; replicas only ever see the proxy)
RESERVED = ("--fd", "--variant", "--exit-with-parent", "--name", "--host", "--port")
NO_KEYS = ("--api-keys-env", "--api-keys-file")


@dataclass(frozen=True)
class ReplicaSpec:
    endpoint: str
    variant: str
    model_folder: Path  # an MLflow model folder, already on disk
    model_name: str  # "abalone/3": what /health and the announcement show
    log_dir: Path  # one log file per replica slot: <variant>-<slot>.log
    serve_args: tuple[str, ...] = ()  # e.g. ("--max-batch", "256")
    env: Mapping[str, str] | None = None  # the children's environment (None: inherit)
    cwd: Path | None = None


@dataclass(eq=False)
class Replica:
    slot: int  # 1, 2, ... stable for the life of the ReplicaSet (reused after scale-in)
    port: int
    pid: int | None
    state: State
    restarts: int
    started_at: float  # time.time()
    last_exit: str | None  # e.g. "exit code 1", "killed by SIGKILL", "not ready in 60s"
    log_path: Path


@dataclass(eq=False)
class _Slot:
    """A replica and what only the set needs to know about it."""

    replica: Replica
    process: subprocess.Popen[bytes] | None = None
    deaths: deque[float] = field(default_factory=deque)  # monotonic times, within the window
    restart_at: float | None = None  # monotonic: when a dead replica is started again
    ready_by: float = 0.0  # monotonic: the deadline of a starting replica
    stopping: bool = False  # being drained or stopped: never restarted
    failure: str | None = None  # why it was given up


class ReplicaSet:
    """The replica processes of one variant, kept at a count by `scale_to` and `tick`."""

    def __init__(
        self,
        spec: ReplicaSpec,
        *,
        on_change: Callable[[], None] = lambda: None,
        ready_timeout: float = 60.0,
        max_restarts: int = 5,
        restart_window: float = 300.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        log_max_bytes: int = LOG_MAX_BYTES,
    ):
        _check_spec(spec)
        if ready_timeout <= 0 or max_restarts < 0 or restart_window <= 0 or log_max_bytes <= 0:
            raise ConfigError(
                "ready_timeout, restart_window and log_max_bytes must be above 0, max_restarts "
                "0 or more"
            )
        if not 0 < backoff[0] <= backoff[1]:
            raise ConfigError(
                f"backoff {backoff} must be (first, longest) with 0 < first <= longest"
            )
        self.spec = spec
        self.on_change = on_change
        self.ready_timeout = ready_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.backoff = backoff
        self.log_max_bytes = log_max_bytes
        self._slots: dict[int, _Slot] = {}
        self._reaping: list[subprocess.Popen[bytes]] = []  # SIGKILLed, not yet reaped
        self._tick_lock = asyncio.Lock()
        self._closed = False

    # -- what the supervisor reads ---------------------------------------------------------------

    @property
    def replicas(self) -> list[Replica]:
        """The live replicas (not stopped), by slot."""
        return [self._slots[n].replica for n in sorted(self._slots)]

    def ready(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "ready"]

    @property
    def crashlooping(self) -> str | None:
        """Why a slot was given up (it died more than max_restarts times in restart_window)."""
        for n in sorted(self._slots):
            if self._slots[n].failure is not None:
                return self._slots[n].failure
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "endpoint": self.spec.endpoint,
                "variant": self.spec.variant,
                "slot": r.slot,
                "port": r.port,
                "pid": r.pid,
                "state": r.state,
                "restarts": r.restarts,
                "started_at": r.started_at,
                "last_exit": r.last_exit,
                "log": str(r.log_path),
            }
            for r in self.replicas
        ]

    # -- scaling ---------------------------------------------------------------------------------

    async def scale_to(self, count: int, drain: Drain) -> None:
        """Start missing slots at once (readiness comes through `tick`); drain, then stop, the
        extra ones, highest slots first. Overlapping calls compose: each counts only the slots
        that are not already being stopped."""
        if count < 0:
            raise ConfigError(f"a variant cannot have {count} replicas")
        if self._closed:
            raise StateConflict(f"the replicas of {self._label} were stopped")
        active = [self._slots[n] for n in sorted(self._slots) if not self._slots[n].stopping]
        if len(active) < count:
            for _ in range(count - len(active)):
                self._spawn(self._new_slot())
            self.on_change()
        elif len(active) > count:
            extra = active[count:][::-1]
            for slot in extra:  # marked before any await, so a concurrent call sees them gone
                slot.stopping = True
                slot.replica.state = "draining"
            self.on_change()
            await asyncio.gather(*(self._retire(slot, drain) for slot in extra))

    async def stop_all(self, drain: Drain | None = None) -> None:
        """Drain (when given) and stop every replica; the set is done afterwards."""
        self._closed = True
        leaving = [slot for slot in self._slots.values() if not slot.stopping]
        for slot in leaving:
            slot.stopping = True
            slot.replica.state = "draining"
        if leaving:
            self.on_change()
        await asyncio.gather(*(self._retire(slot, drain) for slot in leaving))
        while self._slots:  # slots a scale_to was already retiring: it stops them
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + STOP_GRACE
        while self._reaping and time.monotonic() < deadline:
            self._reap_killed()
            await asyncio.sleep(0.02)

    async def _retire(self, slot: _Slot, drain: Drain | None) -> None:
        try:
            if drain is not None:
                await drain(slot.replica)
        finally:  # a failed or cancelled drain must not leave the process running
            await self._stop(slot)

    async def _stop(self, slot: _Slot) -> None:
        slot.restart_at = None
        process = slot.process
        if process is not None:
            code = _reap(process)
            if code is None:
                _signal(process.pid, signal.SIGTERM, group=False)
                code = await _wait_exit(process, STOP_GRACE)
            if code is None:
                _signal(process.pid, signal.SIGKILL, group=True)
                code = await _wait_exit(process, STOP_GRACE)
            if code is None:  # not dead 10 s after SIGKILL (stuck in the kernel): reap later
                self._reaping.append(process)
            slot.replica.last_exit = _exit_reason(code) if code is not None else "killed"
        slot.process = None
        slot.replica.pid = None
        slot.replica.state = "stopped"
        self._slots.pop(slot.replica.slot, None)
        self.on_change()

    # -- the supervisor's tick -------------------------------------------------------------------

    async def tick(self) -> None:
        """Reap dead replicas and restart them (after a backoff) or give them up; move starting
        ones to ready once /ping answers, or count them dead when not ready in time."""
        if self._closed or self._tick_lock.locked():
            return  # a tick still probing: the next one comes soon enough
        async with self._tick_lock:
            self._reap_killed()
            changed = False
            now = time.monotonic()
            probes: list[tuple[_Slot, subprocess.Popen[bytes]]] = []
            for slot in list(self._slots.values()):
                if slot.stopping or slot.failure is not None:
                    continue
                process = slot.process
                if process is None:
                    if slot.restart_at is not None and now >= slot.restart_at:
                        self._spawn(slot)
                        changed = True
                    continue
                code = _reap(process)
                if code is not None:
                    self._died(slot, _exit_reason(code), now)
                    changed = True
                elif slot.replica.state == "starting":
                    if now >= slot.ready_by:
                        _signal(process.pid, signal.SIGKILL, group=True)
                        self._reaping.append(process)
                        self._died(slot, f"not ready in {self.ready_timeout:g}s", now)
                        changed = True
                    else:
                        probes.append((slot, process))
            if probes:
                # a probe never outlasts the deadline: not ready in time means not ready
                answers = await asyncio.gather(
                    *(
                        http_ok(
                            "127.0.0.1",
                            s.replica.port,
                            "/ping",
                            min(PROBE_TIMEOUT, s.ready_by - now),
                        )
                        for s, _ in probes
                    )
                )
                for (slot, process), ok in zip(probes, answers, strict=True):
                    # the slot may have been retired, or its process replaced, meanwhile
                    if ok and slot.process is process and slot.replica.state == "starting":
                        slot.replica.state = "ready"
                        changed = True
            if changed:
                self.on_change()
            await self._rotate_running_logs()

    def _died(self, slot: _Slot, reason: str, now: float) -> None:
        replica = slot.replica
        replica.last_exit = reason
        replica.pid = None
        slot.process = None
        slot.deaths.append(now)
        while slot.deaths and slot.deaths[0] < now - self.restart_window:
            slot.deaths.popleft()
        if len(slot.deaths) > self.max_restarts:
            replica.state = "failed"
            slot.failure = (
                f"replica {replica.slot} of {self._label} died {len(slot.deaths)} times within "
                f"{self.restart_window:g}s (last: {reason}){_last_line(replica.log_path)}; "
                f"log: {replica.log_path}"
            )
            return
        replica.state = "starting"
        replica.restarts += 1
        first, longest = self.backoff
        slot.restart_at = now + min(longest, first * 2 ** (len(slot.deaths) - 1))

    # -- processes -------------------------------------------------------------------------------

    def _new_slot(self) -> _Slot:
        number = 1
        while number in self._slots:  # the lowest free slot: slots are reused after scale-in
            number += 1
        log_path = self.spec.log_dir / f"{self.spec.variant}-{number}.log"
        replica = Replica(number, 0, None, "starting", 0, time.time(), None, log_path)
        slot = self._slots[number] = _Slot(replica)
        return slot

    def _spawn(self, slot: _Slot) -> None:
        """Bind a socket, start `modelyard serve` on it, close our copy (the child keeps it)."""
        spec, replica = self.spec, slot.replica
        slot.restart_at = None
        replica.state = "starting"
        replica.started_at = time.time()
        sock = None
        try:
            spec.log_dir.mkdir(parents=True, exist_ok=True)
            _rotate_by_rename(replica.log_path, self.log_max_bytes)
            sock = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
            replica.port = sock.getsockname()[1]
            command = [
                sys.executable,
                "-m",
                "modelyard",
                "serve",
                str(spec.model_folder),
                "--fd",
                str(sock.fileno()),
                "--variant",
                spec.variant,
                "--name",
                spec.model_name,
                f"--exit-with-parent={os.getpid()}",
                *spec.serve_args,
            ]
            with open(replica.log_path, "ab") as log:
                log.write(
                    f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting replica {replica.slot} "
                    f"of {self._label} on 127.0.0.1:{replica.port}\n".encode()
                )
                log.flush()
                slot.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(sock.fileno(),),
                    start_new_session=True,  # its own process group, away from our signals
                    env=dict(spec.env) if spec.env is not None else None,
                    cwd=spec.cwd,
                )
        except OSError as exc:  # no python, no such cwd, no free fd...: a death like any other
            slot.process = None
            self._died(slot, f"could not start: {exc}", time.monotonic())
            return
        finally:
            if sock is not None:
                sock.close()
        replica.pid = slot.process.pid
        slot.ready_by = time.monotonic() + self.ready_timeout

    def _reap_killed(self) -> None:
        self._reaping = [p for p in self._reaping if _reap(p) is None]

    async def _rotate_running_logs(self) -> None:
        for slot in list(self._slots.values()):
            path = slot.replica.log_path
            if slot.process is not None and _size(path) > self.log_max_bytes:
                await asyncio.to_thread(_rotate_by_copy, path)

    @property
    def _label(self) -> str:
        return f"{self.spec.endpoint}/{self.spec.variant}"


def _check_spec(spec: ReplicaSpec) -> None:
    if not (spec.model_folder / "MLmodel").is_file():
        raise ConfigError(
            f"'{spec.model_folder}' is not an MLflow model folder (it has no MLmodel file)",
            hint="materialize the model's package before starting its replicas",
        )
    for arg in spec.serve_args:
        option = arg.split("=", 1)[0]
        if option in NO_KEYS:
            raise ConfigError(
                f"replicas get no API keys ({option})",
                hint="give the keys to the endpoint: its front proxy checks them",
            )
        if option in RESERVED:
            raise ConfigError(f"{option} is set by the endpoint for each replica", hint="drop it")


# -- process helpers -------------------------------------------------------------------------


def _reap(process: subprocess.Popen[bytes]) -> int | None:
    """The exit code once `process` ended, else None; never blocks. Whatever else is left in
    its process group is killed before the leader is reaped: until then its pid (the group's
    id) cannot be reused, so the signal cannot reach an unrelated process."""
    if process.returncode is not None:
        return process.returncode
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # macOS: no WNOWAIT peek; the group is not cleaned up
        return process.poll()
    try:
        if waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            return None
    except ChildProcessError:
        return process.poll()
    _signal(process.pid, signal.SIGKILL, group=True)
    return process.wait()  # a zombie: returns at once


async def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while (code := _reap(process)) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return code


def _signal(pid: int, sig: signal.Signals, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)  # the child leads its own group (start_new_session)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _exit_reason(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


async def http_ok(host: str, port: int, path: str, timeout: float) -> bool:
    """True when GET `path` at host:port answers 200 within `timeout` seconds (a raw request:
    httpx is not a core dependency, and a probe needs one status line)."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            status = await reader.readline()
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
    parts = status.split(None, 2)
    return len(parts) >= 2 and parts[1] == b"200"


# -- logs ------------------------------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _shift(path: Path) -> None:
    """name.log.2 -> .3, .1 -> .2 (the oldest is overwritten)."""
    for n in range(LOG_KEEP - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))


def _rotate_by_rename(path: Path, limit: int) -> None:
    if _size(path) > limit:
        _shift(path)
        os.replace(path, path.with_name(f"{path.name}.1"))


def _rotate_by_copy(path: Path) -> None:
    _shift(path)
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)  # the child writes with O_APPEND: its next line starts at 0


def _last_line(path: Path) -> str:
    """': <the last line of the log>' (errors end there), or '' without one."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, _size(path) - 4096))
            lines = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    # the CLI ends an error with a "  fix: ..." line: the error itself is just before it
    text = [line.strip() for line in lines if line.strip() and not line.startswith("---")]
    for line in reversed(text):
        if line.startswith("error:"):
            return f": {line[:300]}"
    return f": {text[-1][:300]}" if text else ""
