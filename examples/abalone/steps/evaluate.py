"""Evaluate the trained XGBoost model on the test split and write ``evaluation.json``.

Step contract (files in, files out)::

    python evaluate.py --model DIR --test DIR --evaluation DIR

``--model`` is the folder holding ``xgboost-model.json`` (or that file itself); ``--test`` is a
folder of header-less CSV files (or one file) with the label first. The report written to
``evaluation/evaluation.json`` is::

    {"regression_metrics": {"mse": {"value": <mean of the squared errors>,
                                    "standard_deviation": <their standard deviation>}}}
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xgboost as xgb

MODEL_FILE = "xgboost-model.json"
EVALUATION_FILE = "evaluation.json"


class InputError(Exception):
    """Bad input; the message names the file and the problem."""


def list_csv_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``*.csv`` files of a folder in name order."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
        if not files:
            raise InputError(f"{path}: folder has no *.csv files")
        return files
    raise InputError(f"{path}: no such file or folder")


def read_labeled_file(path: Path) -> np.ndarray:
    """Read one header-less, all-numeric CSV file into a 2-D float array (label in column 0)."""
    rows: list[list[float]] = []
    width = None
    try:
        with path.open(newline="", encoding="utf-8") as handle:
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
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a valid CSV file: {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise InputError(f"{path}: no data rows")
    return np.asarray(rows, dtype=float)


def read_labeled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and features of a file or of every ``*.csv`` file of a folder."""
    path = Path(path)
    matrices = [read_labeled_file(file) for file in list_csv_files(path)]
    widths = {m.shape[1] for m in matrices}
    if len(widths) > 1:
        raise InputError(f"{path}: the files have different column counts: {sorted(widths)}")
    data = np.vstack(matrices)
    return data[:, 0], data[:, 1:]


def load_booster(model_path: Path) -> xgb.Booster:
    """Load ``xgboost-model.json`` from a model folder (or the file itself)."""
    model_path = Path(model_path)
    if not model_path.exists():
        raise InputError(f"{model_path}: no such model folder or file")
    file = model_path / MODEL_FILE if model_path.is_dir() else model_path
    if not file.is_file():
        raise InputError(f"{model_path}: folder has no {MODEL_FILE}")
    booster = xgb.Booster()
    try:
        booster.load_model(str(file))
    except xgb.core.XGBoostError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise InputError(f"{file}: not a valid XGBoost model: {first_line}") from None
    return booster


def regression_report(labels: np.ndarray, predictions: np.ndarray) -> dict[str, object]:
    """The evaluation report: mean and standard deviation of the squared errors."""
    squared_errors = (np.asarray(labels, dtype=float) - np.asarray(predictions, dtype=float)) ** 2
    return {
        "regression_metrics": {
            "mse": {
                "value": float(np.mean(squared_errors)),
                "standard_deviation": float(np.std(squared_errors)),
            }
        }
    }


def evaluate(model_path: Path, test_path: Path, evaluation_dir: Path) -> dict[str, object]:
    """Predict the test split, write ``evaluation/evaluation.json`` and return the report."""
    booster = load_booster(model_path)
    labels, features = read_labeled(test_path)
    print(f"test: {features.shape[0]} rows x {features.shape[1]} features from {test_path}")
    expected = booster.num_features()
    if features.shape[1] != expected:
        raise InputError(
            f"{test_path}: has {features.shape[1]} features but the model expects {expected}"
        )
    predictions = booster.predict(xgb.DMatrix(features, nthread=1))
    report = regression_report(labels, predictions)

    evaluation_path = Path(evaluation_dir) / EVALUATION_FILE
    evaluation_path.parent.mkdir(parents=True, exist_ok=True)
    evaluation_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    mse = report["regression_metrics"]["mse"]  # type: ignore[index]
    std = mse["standard_deviation"]
    print(f"mse={mse['value']:.4f} (standard deviation of the squared errors {std:.4f})")
    print(f"wrote {evaluation_path}")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, type=Path, help="folder with xgboost-model.json (or the file)"
    )
    parser.add_argument("--test", required=True, type=Path, help="folder (or file) of test CSV")
    parser.add_argument(
        "--evaluation", required=True, type=Path, help="output folder for evaluation.json"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        evaluate(args.model, args.test, args.evaluation)
    except InputError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
