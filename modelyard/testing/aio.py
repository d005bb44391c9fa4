"""Small helpers for tests of asyncio code that drives real processes: run a scenario with an
overall deadline, wait for a condition (polling, with a deadline), read a pid a script wrote,
tell whether a process is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 40.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


async def until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # the state is another process's: nothing to await instead


async def read_pid(path: Path) -> int:
    await until(lambda: path.exists() and path.read_text().strip() != "", what=str(path))
    return int(path.read_text().split()[0])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
