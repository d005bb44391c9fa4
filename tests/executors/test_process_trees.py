"""Process trees: recognising a process after a restart, and killing a step's whole tree."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from modelyard.executors.processes import is_same_process, kill_tree, start_time


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids to kill after the test, whatever it did."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def start_tree(
    script: str, pid_file: Path, expected: int
) -> tuple[subprocess.Popen[bytes], list[int]]:
    process = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert process.poll() is None, "the tree's shell ended early"
        assert time.monotonic() < deadline, "the tree never wrote its pids"
        time.sleep(0.01)  # polling for a file the process writes
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == expected
    return process, pids


def test_kill_tree_kills_the_group_and_descendants_that_left_it(
    tmp_path: Path, spawned: list[int]
) -> None:
    pids_file = tmp_path / "pids"
    script = (
        f"setsid sleep 300 & echo $! >> {tmp_path}/tmp; "
        f"sleep 300 & echo $! >> {tmp_path}/tmp; "
        f"echo $$ >> {tmp_path}/tmp; mv {tmp_path}/tmp {pids_file}; wait"
    )
    process, pids = start_tree(script, pids_file, 3)
    spawned += pids
    escaped = psutil.Process(pids[0])
    assert os.getpgid(escaped.pid) != process.pid  # it left the step's process group

    kill_tree(process.pid)

    assert process.wait() < 0  # ended by a signal, and reaped by its parent here
    assert [pid for pid in pids if not gone(pid)] == []


def test_kill_tree_escalates_to_sigkill(tmp_path: Path, spawned: list[int]) -> None:
    pids_file = tmp_path / "pids"
    script = (
        "trap '' TERM; "
        f"sh -c \"trap '' TERM; sleep 300\" & echo $! >> {tmp_path}/tmp; "
        f"echo $$ >> {tmp_path}/tmp; mv {tmp_path}/tmp {pids_file}; "
        "while true; do wait; done"
    )
    process, pids = start_tree(script, pids_file, 2)
    spawned += pids

    kill_tree(process.pid, grace=0.2)

    assert process.wait() == -9
    assert [pid for pid in pids if not gone(pid)] == []


def test_same_process_is_recognised_by_pid_and_start_time() -> None:
    me = os.getpid()
    started = start_time(me)
    assert started is not None
    assert is_same_process(me, started)
    assert is_same_process(me, None)
    # a recycled pid: the process now running under it started at another time
    assert not is_same_process(me, started - 3600)
    assert not is_same_process(None, started)


def test_dead_process_is_not_the_same_process() -> None:
    process = subprocess.Popen(["sh", "-c", "exit 0"])
    pid = process.pid
    started = start_time(pid)
    process.wait()
    assert start_time(pid) is None
    assert not is_same_process(pid, started)
