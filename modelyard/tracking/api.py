"""Logging metrics and parameters from a step: `modelyard.log_metric`, `log_metrics`, `log_params`.

Standard library only (a step importing it pays nothing). Each call appends JSON lines to the
current attempt's metrics file, which the driver reads when the step succeeds:

    {"metric": "rmse", "value": 0.31, "step": 2}
    {"param": "max_depth", "value": 6}

The file is named by `MODELYARD_METRICS_FILE` (set for every attempt), so a step in any language can
append the same lines. Inline steps share one process: the executor names the file of the current
thread's attempt first (`attempt_metrics_file`), the environment variable comes second. Outside a
step (no file), the calls do nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

METRICS_FILE_VAR = "MODELYARD_METRICS_FILE"

_local = threading.local()
_write_lock = threading.Lock()


@contextlib.contextmanager
def attempt_metrics_file(path: str | os.PathLike[str]) -> Iterator[None]:
    """Within the block, this thread's logging goes to `path` (for inline steps)."""
    previous = getattr(_local, "path", None)
    _local.path = os.fspath(path)
    try:
        yield
    finally:
        _local.path = previous


def current_metrics_file() -> str | None:
    return getattr(_local, "path", None) or os.environ.get(METRICS_FILE_VAR) or None


def log_metric(key: str, value: float, step: int = 0) -> None:
    """Record one value of a metric (`step`: e.g. the epoch, for a metric's history)."""
    _append([_metric(key, value, step)])


def log_metrics(metrics: Mapping[str, float], step: int = 0) -> None:
    """Record several metrics at once."""
    _append([_metric(key, value, step) for key, value in metrics.items()])


def log_params(params: Mapping[str, Any]) -> None:
    """Record parameters of the step (values are kept as text in MLflow)."""
    _append([{"param": _key(key), "value": value} for key, value in params.items()])


def _metric(key: str, value: float, step: int) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"metric '{key}' must be a number, not {type(value).__name__}")
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"the step of metric '{key}' must be a whole number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"metric '{key}' must be a finite number (got {number})")
    return {"metric": _key(key), "value": number, "step": step}


def _key(key: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ValueError("a metric or parameter name must be a non-empty string")
    return key


def _append(records: list[dict[str, Any]]) -> None:
    path = current_metrics_file()
    if not path or not records:
        return
    text = "".join(json.dumps(record, default=str) + "\n" for record in records)
    with _write_lock, open(path, "a", encoding="utf-8") as file:
        file.write(text)
