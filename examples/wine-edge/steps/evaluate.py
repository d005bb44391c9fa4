"""Evaluate the wine-quality model on the test split: ``evaluation.json`` and tracked metrics.

Step contract (files in, files out)::

    python evaluate.py --model DIR --test DIR --evaluation DIR

``--model`` is the folder holding ``model.json`` (or that file), ``--test`` holds ``test.csv``.
The report, ``evaluation/evaluation.json``::

    {"regression_metrics": {"rmse": {"value": ...}, "mae": {"value": ...}}, "rows": N}

and ``rmse``/``mae`` go to experiment tracking through ``$MODELYARD_METRICS_FILE``, as in the
abalone example.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from wine_io import log_metrics, read_split, run_step
from wine_model import load_booster, predict

EVALUATION_FILE = "evaluation.json"


def regression_report(labels: np.ndarray, predictions: np.ndarray) -> dict[str, object]:
    errors = np.asarray(predictions, dtype=float) - np.asarray(labels, dtype=float)
    return {
        "regression_metrics": {
            "rmse": {"value": float(np.sqrt(np.mean(errors**2)))},
            "mae": {"value": float(np.mean(np.abs(errors)))},
        },
        "rows": len(errors),
    }


def evaluate(model_path: Path, test_path: Path, evaluation_dir: Path) -> dict[str, object]:
    """Predict the test split, write ``evaluation/evaluation.json`` and return the report."""
    booster = load_booster(model_path)
    features, labels = read_split(test_path, "test.csv")
    report = regression_report(labels, predict(booster, features))
    path = Path(evaluation_dir) / EVALUATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    metrics = report["regression_metrics"]
    assert isinstance(metrics, dict)
    rmse, mae = metrics["rmse"]["value"], metrics["mae"]["value"]
    print(f"test: {len(labels)} rows; rmse={rmse:.4f} mae={mae:.4f}; wrote {path}")
    log_metrics({"rmse": rmse, "mae": mae})
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="folder with model.json")
    parser.add_argument("--test", required=True, type=Path, help="folder (or file) test.csv")
    parser.add_argument("--evaluation", required=True, type=Path, help="output folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_step("evaluate", evaluate, args.model, args.test, args.evaluation)


if __name__ == "__main__":
    sys.exit(main())
