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
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xgboost as xgb
from abalone_io import InputError, read_labeled, run_step

MODEL_FILE = "xgboost-model.json"
EVALUATION_FILE = "evaluation.json"


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
    log_metrics({"mse": mse["value"], "mse_std": std})
    return report


def log_metrics(metrics: dict[str, float]) -> None:
    """Hand the metrics to experiment tracking (MLflow, through modelyard) when run as a step:
    one JSON line each in $MODELYARD_METRICS_FILE. Outside modelyard, nothing is written."""
    path = os.environ.get("MODELYARD_METRICS_FILE")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        for name, value in metrics.items():
            handle.write(json.dumps({"metric": name, "value": float(value)}) + "\n")


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
    return run_step("evaluate", evaluate, args.model, args.test, args.evaluation)


if __name__ == "__main__":
    sys.exit(main())
