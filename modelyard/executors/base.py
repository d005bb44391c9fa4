"""What an executor is given (a task), what it reports (a result), and how it is controlled."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class StepTask:
    """One attempt of one compute step, fully resolved: paths, command, parameters."""

    run_id: int
    step: str
    attempt: int
    kind: str  # "run" or "python"
    project_dir: Path
    cwd: Path
    workdir: Path
    log_path: Path
    inputs: dict[str, Path]
    outputs: dict[str, Path]
    params: dict[str, Any]
    values: list[str]
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] | None = None
    shell: bool = False
    function: str | None = None
    timeout: float | None = None

    @property
    def values_file(self) -> Path:
        return self.workdir / "values.json"

    @property
    def metrics_file(self) -> Path:
        """Where the step logs metrics and parameters (JSON lines, `modelyard.tracking.api`)."""
        return self.workdir / "metrics.jsonl"

    @property
    def error_file(self) -> Path:
        return self.workdir / "error.txt"

    def record_failure(self, exc: BaseException, *, known: bool, prefix: str = "") -> int:
        """In a child process: say why the attempt failed (its error file, read by the driver)
        and return the exit code. A known error's message says what to fix; anything else is a
        library's or the step's own failure, whose traceback goes to the attempt's log."""
        if known:
            print(f"modelyard: {exc}", file=sys.stderr)
            self.error_file.write_text(f"{prefix}{exc}", encoding="utf-8")
        else:
            traceback.print_exc()
            summary = f"{prefix}{type(exc).__name__}: {exc}"
            self.error_file.write_text(summary[:2000], encoding="utf-8")
        return 1

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, default=str)

    @classmethod
    def from_json(cls, text: str) -> StepTask:
        data = json.loads(text)
        for key in ("project_dir", "cwd", "workdir", "log_path"):
            data[key] = Path(data[key])
        data["inputs"] = {k: Path(v) for k, v in data["inputs"].items()}
        data["outputs"] = {k: Path(v) for k, v in data["outputs"].items()}
        return cls(**data)


@dataclass
class StepResult:
    ok: bool
    exit_code: int | None = None
    error: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False
    cancelled: bool = False


class Handle(Protocol):
    """A started attempt."""

    @property
    def pid(self) -> int | None:
        """The OS process id, or None for work running inside this process."""

    def cancel(self) -> None:
        """Stop the attempt (its whole process tree); the result reports cancelled."""


DoneCallback = Callable[[StepTask, StepResult], None]


class Executor(Protocol):
    def start(self, task: StepTask, done: DoneCallback) -> Handle:
        """Start the task; `done` is called exactly once, from any thread, when it ends."""


def read_values(task: StepTask) -> tuple[dict[str, Any], str | None]:
    """The values a step wrote, and an error message if they are not what it declared."""
    values: dict[str, Any] = {}
    if task.values_file.exists():
        try:
            loaded = json.loads(task.values_file.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as exc:
            return {}, f"the values file is not valid JSON: {exc}"
        if not isinstance(loaded, dict):
            return {}, "the values file must hold a JSON object {name: value}"
        values = loaded
    missing = [name for name in task.values if name not in values]
    if missing:
        return values, (
            f"the step declared value '{missing[0]}' but did not produce it "
            "(write it to $MODELYARD_VALUES_FILE as JSON, or return it from the function)"
        )
    undeclared = sorted(set(values) - set(task.values))
    if undeclared:
        return values, (
            f"the step produced value '{undeclared[0]}' that it does not declare: "
            "add it to the step's `values:` list"
        )
    return values, None
