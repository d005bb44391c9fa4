"""What the wine-edge step scripts share: the column names, the split files, errors, metrics.

The scripts import it with a plain ``import wine_io``: ``python steps/train.py`` puts the
script's folder first on ``sys.path``. It is listed under each step's ``code:`` in
``modelyard.yaml``, so a change here invalidates their cached results.

The splits that ``prepare`` writes (``train/train.csv``, ``test/test.csv``) are comma-separated
with a header row: the 13 model columns (``MODEL_COLUMNS``) then ``quality``. Numbers are written
with Python's ``repr``, so every value reads back as exactly the float it was.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

# the 11 measurements, spelt as in the UCI files' header
FEATURES = (
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
)
COLORS = ("color_red", "color_white")  # one-hot: which file a row came from
MODEL_COLUMNS = FEATURES + COLORS  # what the model takes, in this order
LABEL = "quality"
SPLIT_COLUMNS = (*MODEL_COLUMNS, LABEL)


class InputError(Exception):
    """Bad input; the message names the file and the problem."""


def split_file(path: Path, name: str) -> Path:
    """``path`` if it is a file, else ``path/<name>`` (a step's output folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise InputError(f"{path}: no such file (give the folder {name} was written to)")
    return path


def write_split(path: Path, matrix: np.ndarray) -> None:
    """Write rows of ``SPLIT_COLUMNS`` as CSV with a header (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SPLIT_COLUMNS)
        for row in matrix:
            writer.writerow([_number(value) for value in row])


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def read_split(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (the 13 model columns) and labels of a split written by ``write_split``."""
    file = split_file(path, name)
    rows: list[list[float]] = []
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header) != SPLIT_COLUMNS:
                raise InputError(
                    f"{file}: line 1: expected the header {','.join(SPLIT_COLUMNS)}, "
                    f"found {','.join(header or [])!r} (write the split with steps/prepare.py)"
                )
            for lineno, fields in enumerate(reader, start=2):
                if len(fields) != len(SPLIT_COLUMNS):
                    raise InputError(
                        f"{file}: line {lineno}: expected {len(SPLIT_COLUMNS)} columns, "
                        f"found {len(fields)}"
                    )
                rows.append(
                    [_float(raw, file, lineno, column) for column, raw in enumerate(fields)]
                )
    except UnicodeDecodeError:
        raise InputError(f"{file}: not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise InputError(f"{file}: no data rows")
    matrix = np.asarray(rows, dtype=float)
    return matrix[:, :-1], matrix[:, -1]


def _float(raw: str, file: Path, lineno: int, column: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InputError(
            f"{file}: line {lineno}: column {SPLIT_COLUMNS[column]!r} is not a number: {raw!r}"
        ) from None
    if not math.isfinite(value):
        raise InputError(
            f"{file}: line {lineno}: column {SPLIT_COLUMNS[column]!r} is not finite: {raw!r}"
        )
    return value


def log_metrics(metrics: dict[str, float], params: dict[str, object] | None = None) -> None:
    """Hand metrics (and parameters) to experiment tracking when run as a modelyard step: one
    JSON line each in $MODELYARD_METRICS_FILE. Outside modelyard nothing is written."""
    path = os.environ.get("MODELYARD_METRICS_FILE")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        for name, value in (params or {}).items():
            handle.write(json.dumps({"param": name, "value": value}) + "\n")
        for name, number in metrics.items():
            handle.write(json.dumps({"metric": name, "value": float(number)}) + "\n")


def run_step(step: str, action: Callable[..., object], *args: object, **kwargs: object) -> int:
    """Call ``action(*args, **kwargs)``; 0 when it returns, 1 after the one line
    ``<step>: error: <message>`` on stderr when it raises ``InputError`` (no traceback)."""
    try:
        action(*args, **kwargs)
    except InputError as exc:
        print(f"{step}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise ValueError(text)
    return value
