"""Process trees: start times (to recognise a pid after a restart) and killing a whole tree."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any


def start_time(pid: int) -> float | None:
    """When process `pid` started, or None if it does not exist."""
    if os.path.exists("/proc/self/stat"):
        return _linux_start_time(pid)
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def _linux_start_time(pid: int) -> float | None:
    # /proc is read directly: psutil costs every command ~10 ms of import for this one number.
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith(b"btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    # field 22 of stat is the start time in clock ticks after boot; [0] here is field 3
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def is_same_process(pid: int | None, started_at: float | None) -> bool:
    """True if `pid` is alive and is the process that started at `started_at` (not a reused pid)."""
    if pid is None:
        return False
    current = start_time(pid)
    if current is None:
        return False
    return started_at is None or abs(current - started_at) < 1.0


def kill_tree(pid: int, *, grace: float = 5.0) -> None:
    """SIGTERM the process group led by `pid` and every descendant, then SIGKILL what is left.

    Steps run in their own session, so the group holds the step and what it started; descendants
    that left the group (daemonised with setsid) are found through the process tree.
    """
    import psutil

    try:
        leader = psutil.Process(pid)
        members = [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        members = []
    _signal_group(pid, signal.SIGTERM)
    for proc in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    alive = _wait_exited(members, grace)
    _signal_group(pid, signal.SIGKILL)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _wait_exited(alive, grace)


def _wait_exited(procs: list[Any], timeout: float) -> list[Any]:
    """Wait until the processes have exited; return those still running after `timeout`.

    A zombie has exited: only its parent's reaping is left, which for a step's orphaned
    descendants is up to the init process (and never happens under an init that does not reap,
    as in a container whose first process is not an init).
    """
    import psutil

    def running(proc: Any) -> bool:
        try:
            return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while True:
        procs = [p for p in procs if running(p)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(0.01)  # polling: a process that is not our child cannot be waited for


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` no longer exists (used for processes that are not our children)."""
    import psutil

    try:
        psutil.Process(pid).wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True
