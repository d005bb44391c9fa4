"""Input handling shared by the abalone step scripts (preprocess.py, train.py, evaluate.py).

The scripts import it with a plain ``import abalone_io``: ``python steps/train.py`` puts the
script's folder first on ``sys.path``, so this file is found next to them. It is listed under
each step's ``code:`` in ``modelyard.yaml``, so a change here invalidates their cached results.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class InputError(Exception):
    """Bad input; the message names the file and the problem."""


def list_files(path: Path, suffixes: Sequence[str] = (".csv",)) -> list[Path]:
    """``path`` itself, or the files of a folder whose suffix is one of ``suffixes``, by name.

    The suffixes are lower-case with their dot (``".csv"``); a file's suffix is compared
    case-insensitively. Sub-folders are ignored, even when their name has a listed suffix.
    """
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            patterns = " or ".join(f"*{suffix}" for suffix in suffixes)
            raise InputError(f"{path}: folder has no {patterns} files")
        return files
    raise InputError(f"{path}: no such file or folder")


@contextmanager
def read_errors(path: Path) -> Iterator[None]:
    """Turn a failure to read the text file ``path`` inside the block into an ``InputError``.

    Wrap the opening as well as the reading: ``with read_errors(path), path.open(...) as f:``.
    """
    try:
        yield
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a valid CSV file: {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_labeled_file(path: Path) -> np.ndarray:
    """Read one header-less, all-numeric CSV file into a 2-D float array (label in column 0)."""
    rows: list[list[float]] = []
    width = None
    with read_errors(path), path.open(newline="", encoding="utf-8") as handle:
        for lineno, fields in enumerate(csv.reader(handle), start=1):
            if not any(field.strip() for field in fields):
                continue  # blank line
            if width is None:
                if len(fields) < 2:
                    raise InputError(
                        f"{path}: line {lineno}: expected the label and at least one feature, "
                        f"found {len(fields)} column(s)"
                    )
                width = len(fields)
            elif len(fields) != width:
                raise InputError(
                    f"{path}: line {lineno}: expected {width} columns like the first row, "
                    f"found {len(fields)}"
                )
            row = []
            for column, raw in enumerate(fields, start=1):
                try:
                    value = float(raw)
                except ValueError:
                    raise InputError(
                        f"{path}: line {lineno}: column {column} is not a number: {raw!r}"
                    ) from None
                if not math.isfinite(value):
                    raise InputError(
                        f"{path}: line {lineno}: column {column} is not finite: {raw!r}"
                    )
                row.append(value)
            rows.append(row)
    if not rows:
        raise InputError(f"{path}: no data rows")
    return np.asarray(rows, dtype=float)


def read_labeled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and features of a file or of every ``*.csv`` file of a folder."""
    path = Path(path)
    matrices = [read_labeled_file(file) for file in list_files(path)]
    widths = {m.shape[1] for m in matrices}
    if len(widths) > 1:
        raise InputError(f"{path}: the files have different column counts: {sorted(widths)}")
    data = np.vstack(matrices)
    return data[:, 0], data[:, 1:]


def run_step(step: str, action: Callable[..., object], *args: object, **kwargs: object) -> int:
    """Call ``action(*args, **kwargs)`` and return the step's exit code.

    0 when it returns; 1 when it raises ``InputError``, after printing the one line
    ``<step>: error: <message>`` to stderr (no traceback). Other exceptions propagate.
    """
    try:
        action(*args, **kwargs)
    except InputError as exc:
        print(f"{step}: error: {exc}", file=sys.stderr)
        return 1
    return 0
