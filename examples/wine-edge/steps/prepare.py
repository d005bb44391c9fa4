"""Join the red and white wine files, one-hot the colour, shuffle and split train/test.

Step contract (files in, files out)::

    python prepare.py --input DIR --train DIR --test DIR [--seed 42] [--test-fraction 0.2]

``--input`` is a folder of the UCI files (``*.csv``: semicolon-separated, a header of the 11
measurements and ``quality``). A file's colour comes from its name: it must contain ``red`` or
``white`` (``winequality-red.csv``), since the rows themselves do not say; both colours must be
there, and several files of a colour are joined (new data can arrive as another file). Each
row gets ``color_red``/``color_white`` (1/0), then the rows are shuffled with ``--seed`` and
split; ``train/train.csv`` and ``test/test.csv`` have the columns of ``wine_io.SPLIT_COLUMNS``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from wine_io import FEATURES, LABEL, InputError, fraction, run_step, write_split

SOURCE_COLUMNS = (*FEATURES, LABEL)
COLOR_WORDS = ("red", "white")


def wine_files(path: Path) -> list[tuple[Path, str]]:
    """The CSV files of the folder ``path`` by name, each with its colour."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such folder (give the folder of the red and white files)")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if not files:
        raise InputError(f"{path}: folder has no *.csv files")
    found = []
    for file in files:
        colors = [word for word in COLOR_WORDS if word in file.name.lower()]
        if len(colors) != 1:
            raise InputError(
                f"{file}: cannot tell the wine colour from the file name; name it with 'red' "
                "or 'white' (e.g. winequality-red.csv), as the rows do not say"
            )
        found.append((file, colors[0]))
    for color in COLOR_WORDS:
        if not any(c == color for _, c in found):
            raise InputError(
                f"{path}: no {color} wine file; the model needs both colours "
                f"(a *.csv whose name contains '{color}')"
            )
    return found


def read_wine_file(path: Path) -> np.ndarray:
    """The rows of one UCI file: 11 measurements then quality, as floats."""
    rows: list[list[float]] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=";")
            header = next(reader, None)
            names = tuple(name.strip() for name in header or ())
            if names != SOURCE_COLUMNS:
                found = repr(";".join(header)) if header else "an empty file"
                raise InputError(
                    f"{path}: line 1: expected the semicolon-separated header "
                    f"{';'.join(SOURCE_COLUMNS)}, found {found}"
                )
            for lineno, fields in enumerate(reader, start=2):
                if not any(field.strip() for field in fields):
                    continue  # a blank line
                rows.append(_row(fields, path, lineno))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a valid CSV file: {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise InputError(f"{path}: no data rows")
    return np.asarray(rows, dtype=float)


def _row(fields: list[str], path: Path, lineno: int) -> list[float]:
    if len(fields) != len(SOURCE_COLUMNS):
        hint = " (is it comma-separated? the UCI files use ';')" if len(fields) == 1 else ""
        raise InputError(
            f"{path}: line {lineno}: expected {len(SOURCE_COLUMNS)} semicolon-separated "
            f"columns, found {len(fields)}{hint}"
        )
    row = []
    for name, raw in zip(SOURCE_COLUMNS, fields, strict=True):
        try:
            value = float(raw)
        except ValueError:
            raise InputError(
                f"{path}: line {lineno}: column {name!r} is not a number: {raw!r}"
            ) from None
        if not math.isfinite(value):
            raise InputError(f"{path}: line {lineno}: column {name!r} is not finite: {raw!r}")
        row.append(value)
    quality = row[-1]
    if not (quality.is_integer() and 0 <= quality <= 10):
        raise InputError(
            f"{path}: line {lineno}: {LABEL} must be a whole score from 0 to 10, got {fields[-1]!r}"
        )
    return row


def load_wines(path: Path) -> tuple[np.ndarray, dict[str, int]]:
    """All rows with their colour one-hot: columns ``wine_io.SPLIT_COLUMNS``; rows per colour."""
    blocks = []
    counts = dict.fromkeys(COLOR_WORDS, 0)
    for file, color in wine_files(path):
        data = read_wine_file(file)
        onehot = np.zeros((len(data), len(COLOR_WORDS)))
        onehot[:, COLOR_WORDS.index(color)] = 1.0
        blocks.append(np.hstack([data[:, :-1], onehot, data[:, -1:]]))
        counts[color] += len(data)
        print(f"{file.name}: {len(data)} {color} wine rows")
    return np.vstack(blocks), counts


def split(data: np.ndarray, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle with ``seed`` and cut off ``test_fraction`` of the rows (at least one each)."""
    n_test = round(len(data) * test_fraction)
    if n_test < 1 or n_test >= len(data):
        raise InputError(
            f"{len(data)} rows are too few to split with a test fraction of {test_fraction}"
        )
    order = np.random.default_rng(seed).permutation(len(data))
    return data[order[n_test:]], data[order[:n_test]]


def prepare(
    input_path: Path, train_dir: Path, test_dir: Path, seed: int = 42, test_fraction: float = 0.2
) -> dict[str, int]:
    """Write ``train/train.csv`` and ``test/test.csv``; return the row counts."""
    data, counts = load_wines(input_path)
    train, test = split(data, seed, test_fraction)
    write_split(Path(train_dir) / "train.csv", train)
    write_split(Path(test_dir) / "test.csv", test)
    print(f"{len(data)} rows -> train {len(train)}, test {len(test)} (seed {seed})")
    return {"rows": len(data), **counts, "train": len(train), "test": len(test)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="folder of the UCI CSV files")
    parser.add_argument("--train", required=True, type=Path, help="output folder of train.csv")
    parser.add_argument("--test", required=True, type=Path, help="output folder of test.csv")
    parser.add_argument("--seed", type=int, default=42, help="shuffling seed")
    parser.add_argument(
        "--test-fraction", "--test_fraction", type=fraction, default=0.2,
        help="share of the rows held out for the test split, between 0 and 1",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_step(
        "prepare", prepare, args.input, args.train, args.test, args.seed, args.test_fraction
    )


if __name__ == "__main__":
    sys.exit(main())
