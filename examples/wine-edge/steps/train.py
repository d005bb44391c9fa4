"""Train the XGBoost regressor of wine quality and save the booster as ``model.json``.

Step contract (files in, files out)::

    python train.py --train DIR --model DIR [--seed 42] [--num-round 200] [--max-depth 6]
                    [--eta 0.1] [--subsample 0.8] [--colsample-bytree 0.8]
                    [--min-child-weight 1]

``--train`` holds ``train.csv`` from ``prepare.py``. The booster is trained with the 13 column
names as its feature names, so ``model.json`` itself says which value goes where: the edge
component builds its input in that order from JSON records.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb
from wine_io import MODEL_COLUMNS, fraction, log_metrics, positive_int, read_split, run_step
from wine_model import MODEL_FILE


@dataclass(frozen=True)
class Hyperparameters:
    seed: int = 42
    num_round: int = 200
    max_depth: int = 6
    eta: float = 0.1
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0

    def booster_params(self) -> dict[str, object]:
        return {
            "objective": "reg:squarederror",
            "eval_metric": "rmse",
            "tree_method": "hist",
            "seed": self.seed,
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
        }


def train(train_path: Path, model_dir: Path, hyperparameters: Hyperparameters) -> dict[str, float]:
    """Fit on the training split, write ``model_dir/model.json``, return the training rmse."""
    features, labels = read_split(train_path, "train.csv")
    print(f"train: {features.shape[0]} rows x {features.shape[1]} features")
    matrix = xgb.DMatrix(features, label=labels, feature_names=list(MODEL_COLUMNS))
    booster = xgb.train(
        hyperparameters.booster_params(), matrix, num_boost_round=hyperparameters.num_round
    )
    predictions = booster.predict(matrix)
    metrics = {"train_rmse": float(np.sqrt(np.mean((predictions - labels) ** 2)))}
    model_path = Path(model_dir) / MODEL_FILE
    model_path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_path))
    print(f"train_rmse={metrics['train_rmse']:.4f}; wrote {model_path}")
    log_metrics(metrics, params=asdict(hyperparameters))
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, type=Path, help="folder (or file) train.csv")
    parser.add_argument("--model", required=True, type=Path, help="output folder of model.json")
    defaults = Hyperparameters()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--num-round", "--num_round", type=positive_int, default=defaults.num_round,
        help="boosting rounds",
    )  # fmt: skip
    parser.add_argument("--max-depth", "--max_depth", type=positive_int, default=defaults.max_depth)
    parser.add_argument("--eta", type=fraction, default=defaults.eta, help="learning rate")
    parser.add_argument("--subsample", type=_share, default=defaults.subsample)
    parser.add_argument(
        "--colsample-bytree", "--colsample_bytree", type=_share, default=defaults.colsample_bytree
    )
    parser.add_argument(
        "--min-child-weight", "--min_child_weight", type=_non_negative,
        default=defaults.min_child_weight,
    )  # fmt: skip
    return parser


def _share(text: str) -> float:
    """argparse type: a sampling share in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise ValueError(text)
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise ValueError(text)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    train_path, model_dir = args.pop("train"), args.pop("model")
    return run_step("train", train, train_path, model_dir, Hyperparameters(**args))


if __name__ == "__main__":
    sys.exit(main())
