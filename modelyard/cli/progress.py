"""Live progress of a run: a status table on a terminal, one line per event otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

_SYMBOLS = {
    "pending": "·",
    "running": "▶",
    "waiting": "⏸",
    "succeeded": "✔",
    "cached": "↺",
    "failed": "✘",
    "skipped": "-",
    "cancelled": "■",
    "retrying": "↻",
}


class LineProgress:
    """One line per event: for logs, CI and pipes."""

    def __init__(self, stream: Any = None):
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def __call__(self, kind: str, step: str | None, message: str) -> None:
        elapsed = time.monotonic() - self.started
        subject = f"{step}: " if step else ""
        text = f"[{elapsed:7.2f}s] {kind:<16} {subject}{message}".rstrip()
        print(text, file=self.stream, flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class LiveProgress:
    """A table of the steps that redraws in place while the run is in flight (rich)."""

    def __init__(self, steps: list[str]):
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.state: dict[str, tuple[str, str, float | None, float | None]] = {
            s: ("pending", "", None, None) for s in steps
        }
        self.notes: list[str] = []
        self.lock = threading.RLock()
        # Live re-renders `self` (see __rich__) on every refresh, so running times keep ticking.
        self.live = Live(self, console=self.console, refresh_per_second=4)

    def __call__(self, kind: str, step: str | None, message: str) -> None:
        with self.lock:
            if step is None:
                if kind.startswith("run-") and kind != "run-started":
                    self.notes.append(f"{kind[4:]}: {message}" if message else kind[4:])
            else:
                status = kind.removeprefix("step-").removeprefix("approval-")
                _, _, started, ended = self.state.get(step, ("", "", None, None))
                now = time.monotonic()
                if status == "started":
                    status, started, ended = "running", now, None
                elif status in ("succeeded", "cached", "failed", "skipped", "cancelled"):
                    ended = now
                self.state[step] = (status, message, started, ended)
        self.live.refresh()

    def __rich__(self) -> Any:
        with self.lock:
            return self._render()

    def _render(self) -> Any:
        from rich.table import Table

        grid = Table(box=None, show_header=False, pad_edge=False)
        now = time.monotonic()
        for step, (status, message, started, ended) in self.state.items():
            took = "" if started is None else f"{(ended or now) - started:6.1f}s"
            symbol = _SYMBOLS.get(status, "?")
            grid.add_row(symbol, step, status, took, message[:80])
        for note in self.notes:
            grid.add_row("", "", note, "", "")
        return grid

    def __enter__(self) -> LiveProgress:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()


def progress_for(steps: list[str], quiet: bool = False) -> Any:
    if quiet:
        return _Silent()
    if sys.stderr.isatty():
        return LiveProgress(steps)
    return LineProgress()


class _Silent:
    def __call__(self, kind: str, step: str | None, message: str) -> None:
        return None

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
