"""The default executor: each attempt is a local process in its own session.

`run` steps execute their command; `python` steps run `python -m modelyard.executors.child` which
imports and calls the function. Output goes to the attempt's log file; a timeout or a cancel kills
the whole process tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from modelyard.executors.base import DoneCallback, StepResult, StepTask, read_values
from modelyard.executors.contracts import process_environment
from modelyard.executors.processes import kill_tree


class LocalProcessHandle:
    def __init__(self, process: subprocess.Popen[bytes]):
        self.process = process
        self.cancelled = threading.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def cancel(self) -> None:
        self.cancelled.set()
        kill_tree(self.process.pid)


class NotStarted:
    """The handle of an attempt whose process could not be started (already reported)."""

    pid = None

    def cancel(self) -> None:
        return None


class LocalProcessExecutor:
    def start(self, task: StepTask, done: DoneCallback) -> LocalProcessHandle | NotStarted:
        argv, shell = _command(task)
        env = process_environment(task)
        task.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(task.log_path, "ab") as log:
            try:
                process = subprocess.Popen(
                    argv if not shell else argv[0],
                    shell=shell,
                    cwd=task.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                message = f"cannot start '{argv[0]}': {exc.strerror or exc}"
                log.write(f"modelyard: {message}\n".encode())
                done(task, StepResult(ok=False, error=message))
                return NotStarted()
        handle = LocalProcessHandle(process)
        threading.Thread(
            target=_wait, args=(task, handle, done), name=f"wait-{task.step}", daemon=True
        ).start()
        return handle


def _command(task: StepTask) -> tuple[list[str], bool]:
    if task.kind == "python":
        task_file = task.workdir / "task.json"
        task_file.write_text(task.to_json(), encoding="utf-8")
        return [sys.executable, "-m", "modelyard.executors.child", str(task_file)], False
    assert task.argv is not None
    return task.argv, task.shell


def _wait(task: StepTask, handle: LocalProcessHandle, done: DoneCallback) -> None:
    process = handle.process
    timed_out = False
    try:
        code = process.wait(timeout=task.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_tree(process.pid)
        code = process.wait()
    if handle.cancelled.is_set():
        done(task, StepResult(ok=False, exit_code=code, error="cancelled", cancelled=True))
    elif timed_out:
        error = f"timed out after {task.timeout:g}s; the process tree was killed"
        _append_log(task.log_path, f"modelyard: {error}\n")
        done(task, StepResult(ok=False, exit_code=code, error=error, timed_out=True))
    elif code != 0:
        done(task, StepResult(ok=False, exit_code=code, error=_failure_message(task, code)))
    else:
        values, problem = read_values(task)
        done(task, StepResult(ok=problem is None, exit_code=0, error=problem, values=values))


def _failure_message(task: StepTask, code: int) -> str:
    if task.error_file.exists():
        return task.error_file.read_text(encoding="utf-8").strip() or f"exit code {code}"
    if code < 0:
        return f"killed by signal {-code}"
    tail = _log_tail(task.log_path)
    return f"exit code {code}" + (f": {tail}" if tail else "")


def _log_tail(path: Path) -> str:
    """The last non-empty line of the log: usually the error message."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln.strip() for ln in log.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else ""


def _append_log(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as log:
        log.write(text)
