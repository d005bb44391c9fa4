"""The inline executor: `python` steps run in a thread of the driving process.

For a fast inner loop: no interpreter start, no re-import. Each step's print output goes to its own
log through a per-thread stream. A timeout cannot kill a thread: the step is reported as timed out
and its result discarded, and the note in its log says so.
"""

from __future__ import annotations

import io
import sys
import threading
import traceback
from typing import Any, TextIO

from modelyard.executors.base import DoneCallback, StepResult, StepTask, read_values
from modelyard.executors.pyfunc import StepFunctionError, call_step_function
from modelyard.tracking.api import attempt_metrics_file


class _ThreadRoutedStream(io.TextIOBase):
    """Writes go to the current thread's log if it has one, else to the original stream."""

    def __init__(self, original: TextIO):
        self.original = original
        self.local = threading.local()

    def write(self, text: str) -> int:
        target = getattr(self.local, "target", None)
        return (target or self.original).write(text)

    def flush(self) -> None:
        (getattr(self.local, "target", None) or self.original).flush()


_install_lock = threading.Lock()
_streams: tuple[_ThreadRoutedStream, _ThreadRoutedStream] | None = None


def _routed_streams() -> tuple[_ThreadRoutedStream, _ThreadRoutedStream]:
    global _streams
    with _install_lock:
        if _streams is None:
            _streams = (_ThreadRoutedStream(sys.stdout), _ThreadRoutedStream(sys.stderr))
            sys.stdout, sys.stderr = _streams
        return _streams


class InlineHandle:
    pid = None

    def __init__(self, task: StepTask, done: DoneCallback) -> None:
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self._task, self._done = task, done
        self._lock = threading.Lock()

    def report(self, result: StepResult) -> None:
        """Report the attempt's result once; a later one (a thread ending late) is discarded."""
        with self._lock:
            if self.finished.is_set():
                return
            self.finished.set()
        self._done(self._task, result)

    def cancel(self) -> None:
        # A thread cannot be killed: the attempt ends now and its thread's result is discarded.
        self.cancelled.set()
        self.report(StepResult(ok=False, error="cancelled", cancelled=True))


class InlineExecutor:
    def start(self, task: StepTask, done: DoneCallback) -> InlineHandle:
        handle = InlineHandle(task, done)
        worker = threading.Thread(target=self._run, args=(task, handle), name=f"inline-{task.step}")
        worker.daemon = True
        worker.start()
        if task.timeout is not None:
            threading.Thread(target=self._watch, args=(task, handle), daemon=True).start()
        return handle

    def _run(self, task: StepTask, handle: InlineHandle) -> None:
        # Whatever happens, the attempt reports exactly one result: a thread that ended without
        # one would leave the driver waiting forever.
        result = StepResult(ok=False, exit_code=1, error="the step ended without a result")
        try:
            out, err = _routed_streams()
            task.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(task.log_path, "a", encoding="utf-8", buffering=1) as log:
                out.local.target = err.local.target = log
                try:
                    with attempt_metrics_file(task.metrics_file):  # this thread's attempt
                        result = self._call(task)
                finally:
                    out.local.target = err.local.target = None
        except OSError as exc:
            result = StepResult(ok=False, exit_code=1, error=f"step I/O failed: {exc}")
        finally:
            handle.report(result)

    @staticmethod
    def _call(task: StepTask) -> StepResult:
        try:
            values: dict[str, Any] = call_step_function(task)
        except StepFunctionError as exc:
            print(f"modelyard: {exc}", file=sys.stderr)
            return StepResult(ok=False, exit_code=1, error=str(exc))
        except SystemExit as exc:  # sys.exit() in a step ends the step, not the driving process
            code = exc.code if isinstance(exc.code, int) else 1
            if code == 0:
                values = {}
            else:
                return StepResult(ok=False, exit_code=code, error=f"the step called exit({code})")
        except Exception as exc:
            traceback.print_exc()
            return StepResult(ok=False, exit_code=1, error=f"{type(exc).__name__}: {exc}")
        task.values_file.write_text(_json(values), encoding="utf-8")
        checked, problem = read_values(task)
        return StepResult(ok=problem is None, exit_code=0, error=problem, values=checked)

    @staticmethod
    def _watch(task: StepTask, handle: InlineHandle) -> None:
        assert task.timeout is not None
        if handle.finished.wait(task.timeout):
            return
        handle.cancelled.set()
        error = f"timed out after {task.timeout:g}s (inline steps cannot be killed: use the "
        error += "process executor for steps that may hang)"
        handle.report(StepResult(ok=False, error=error, timed_out=True))


def _json(values: dict[str, Any]) -> str:
    import json

    return json.dumps(values)
