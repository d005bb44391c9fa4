"""Size-rotated, timestamped log files: one per component and one for the agent itself.

A device has little disk and nobody watching, so every log is bounded: when a write would take
the file past `max_bytes`, it becomes `<name>.1` (older ones shift to `.2`, ... up to `backups`,
the oldest is dropped) and a new file starts. Lines are appended with a UTC timestamp
(`2024-05-01T12:00:00.123Z <text>`) and flushed at once, so `tail -f` and tests see them, but never
fsynced: a line lost in a power cut is cheaper than an SD card worn out or a stalled event loop.

Layout under the agent's root: `logs/<component name>.log` and `logs/modelyard-agent.log`.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

MiB = 1024 * 1024
AGENT_LOG_NAME = "modelyard-agent.log"


def logs_dir(root: Path) -> Path:
    return root / "logs"


def component_log_path(root: Path, component: str) -> Path:
    """`<root>/logs/<component>.log`; refuses names that would leave the logs folder."""
    if not component or component in (".", "..") or "/" in component or "\0" in component:
        raise ValueError(f"component name {component!r} can't be used as a log file name")
    return logs_dir(root) / f"{component}.log"


def agent_log_path(root: Path) -> Path:
    return logs_dir(root) / AGENT_LOG_NAME


def _timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class RotatingLog:
    """Append timestamped lines to `path`, rotating by size. Thread-safe; cheap per line."""

    def __init__(self, path: Path, max_bytes: int = 10 * MiB, backups: int = 3) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be 0 or more, got {backups}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._size = 0

    def write(self, text: str | bytes) -> None:
        """Append `text` (one line, or several separated by newlines), each with a timestamp."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        lines = text.rstrip("\r\n").split("\n") if text else [""]
        stamp = _timestamp()
        data = b"".join(f"{stamp} {line.rstrip(chr(13))}\n".encode() for line in lines)
        with self._lock:
            f = self._open()
            if self._size and self._size + len(data) > self.max_bytes:
                f = self._rotate()
            f.write(data)
            f.flush()  # visible to readers now; no fsync (see the module docstring)
            self._size += len(data)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> RotatingLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across writes
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> BinaryIO:
        assert self._file is not None
        self._file.close()
        self._file = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            # shift .N-1 -> .N, ..., the file itself -> .1; os.replace drops the oldest
            for index in range(self.backups - 1, 0, -1):
                older = self._backup(index)
                if older.exists():
                    os.replace(older, self._backup(index + 1))
            os.replace(self.path, self._backup(1))
        return self._open()

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def __repr__(self) -> str:
        return (
            f"RotatingLog({str(self.path)!r}, max_bytes={self.max_bytes}, backups={self.backups})"
        )
