"""Helpers for the run engine's behaviour tests: a throw-away project on a real metadata DB.

`engine` (an `EngineHarness`) writes a project into a temporary folder, opens its runtime on the
`database_url` backend (SQLite and PostgreSQL), runs pipelines in-process or through the CLI in a
subprocess, and reads the run's rows back. In the project file, `@PY@` stands for the test's
Python interpreter (steps start without a shell or a version-manager shim) and `@SCRATCH@` for a
folder outside the project where steps leave markers and counters for the test.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from modelyard.engine import service
from modelyard.engine.runtime import Runtime
from modelyard.project.loader import load_project
from modelyard.store import runs as db
from modelyard.store import schema as t
from modelyard.testing.projects import open_runtime, write_project

PY = sys.executable
DEADLINE_SECONDS = 60.0


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_SECONDS) -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)  # polling interval of a condition wait, not a synchronisation sleep


def process_gone(pid: int) -> bool:
    """True if `pid` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_if_alive(pid: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).kill()


class BackgroundDrive:
    """A driver running in a thread of the test process (for cancel and lease tests)."""

    def __init__(self, target: Callable[[], db.RunRow]):
        self.result: db.RunRow | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target: Callable[[], db.RunRow]) -> None:
        try:
            self.result = target()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = DEADLINE_SECONDS) -> db.RunRow:
        self.thread.join(timeout)
        if self.thread.is_alive():
            pytest.fail(f"the background driver did not finish within {timeout:g}s")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class EngineHarness:
    def __init__(self, root: Path, database_url: str, scratch: Path):
        self.root = root
        self.database_url = database_url
        self.scratch = scratch  # a folder outside the project for markers and counters
        self._runtime: Runtime | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pids_to_reap: list[int] = []

    # -- the project

    def write(self, project_yaml: str, files: Mapping[str, str] | None = None) -> Path:
        text = project_yaml.replace("@PY@", PY).replace("@SCRATCH@", str(self.scratch))
        return write_project(self.root, text, files)

    def edit(self, relative: str, text: str) -> None:
        (self.root / relative).write_text(textwrap.dedent(text))

    # -- the runtime and runs

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = open_runtime(self.root, self.database_url)
        return self._runtime

    def create(self, pipeline: str, params: Mapping[str, Any] | None = None, **options: Any) -> int:
        project = load_project(self.root)
        return service.create_run(
            self.runtime, project, pipeline, params or {}, service.RunOptions(**options)
        )

    def run(
        self, pipeline: str, params: Mapping[str, Any] | None = None, **options: Any
    ) -> db.RunRow:
        return service.drive_run(self.runtime, self.create(pipeline, params, **options))

    def drive_in_background(self, run_id: int) -> BackgroundDrive:
        return BackgroundDrive(lambda: service.drive_run(self.runtime, run_id))

    def detail(self, run_id: int) -> service.RunDetail:
        return service.run_detail(self.runtime, run_id)

    def steps(self, run_id: int) -> dict[str, db.StepRow]:
        return self.detail(run_id).steps

    def attempts(self, run_id: int, step: str) -> list[db.AttemptRow]:
        return self.detail(run_id).attempts[step]

    def events(self, run_id: int) -> list[tuple[str, str | None, str]]:
        with self.runtime.db.begin() as conn:
            return [(e.kind, e.step, e.message) for e in db.get_events(conn, run_id)]

    def count(self, table: sa.Table) -> int:
        with self.runtime.db.begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def total_attempts(self) -> int:
        return self.count(t.attempts)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every run table, to prove that a refused action changed nothing."""
        tables = (t.runs, t.step_runs, t.attempts, t.approvals, t.events, t.cache_entries)
        with self.runtime.db.begin() as conn:
            return {
                table.name: sorted(
                    (tuple(map(repr, row)) for row in conn.execute(sa.select(table))),
                )
                for table in tables
            }

    def execute(self, statement: sa.Executable) -> None:
        with self.runtime.db.begin() as conn:
            conn.execute(statement)

    # -- the CLI in a subprocess

    def cli(self, *args: str) -> subprocess.Popen[bytes]:
        # the same settings as the test's runtime: none from the environment but the database
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
        env["MODELYARD_DATABASE_URL"] = self.database_url
        env["MODELYARD_TRACKING_AUTO_PUSH"] = "0"  # no detached MLflow pusher after the run
        process = subprocess.Popen(
            [PY, "-m", "modelyard", "--project", str(self.root), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        for pid in self.pids_to_reap:
            kill_if_alive(pid)
        if self._runtime is not None:
            self._runtime.close()
