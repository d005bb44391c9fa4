"""Fixtures for CLI tests: a clean environment, the CLI in-process, and the CLI as a process."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelyard.cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MODELYARD_* variable of the developer's shell may change what the CLI does."""
    for name in list(os.environ):
        if name.startswith("MODELYARD_"):
            monkeypatch.delenv(name)
    # no detached MLflow pusher after each `run` (tests/tracking tests it)
    monkeypatch.setenv("MODELYARD_TRACKING_AUTO_PUSH", "0")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`cli(root, "run", "train")`: `modelyard --project ROOT ...` in this process."""

    def invoke(root: Path | None, *args: str) -> Result:
        capsys.readouterr()
        argv = (["--project", str(root)] if root is not None else []) + list(args)
        code = main(argv)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def cli_process(tmp_path: Path) -> Callable[..., Result]:
    """`cli_process(root, "validate")`: `python -m modelyard --project ROOT ...` as a process."""

    def invoke(root: Path, *args: str) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "modelyard", "--project", str(root), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return invoke


@pytest.fixture
def recorded_runs() -> Callable[[Path], list[int]]:
    """The ids of the runs in a project's embedded database (none if it does not exist)."""

    def read(root: Path) -> list[int]:
        database = root / ".modelyard" / "modelyard.db"
        if not database.exists():
            return []
        with contextlib.closing(sqlite3.connect(database)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "runs" not in tables:
                return []
            return [r[0] for r in conn.execute("SELECT id FROM runs")]

    return read
