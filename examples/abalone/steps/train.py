"""Train an XGBoost regressor of abalone rings on the preprocessed train and validation splits.

Step contract (files in, files out)::

    python train.py --train DIR --validation DIR --model DIR \
        [--num-round 50] [--max-depth 5] [--eta 0.2] [--gamma 4] [--min-child-weight 6] \
        [--subsample 0.7] [--seed 42]

Every hyperparameter also accepts the SageMaker spelling with underscores (``--max_depth 5``).
``--train`` and ``--validation`` are folders (all their ``*.csv`` files are read, in name order)
or single files; each row is the label first, then the features, with no header. The booster is
saved to ``model/xgboost-model.json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import xgboost as xgb
from abalone_io import InputError, read_labeled, run_step

MODEL_FILE = "xgboost-model.json"
# One thread: XGBoost's histogram sums are then computed in a fixed order, so the same data and
# seed always give the same model, whatever the machine's core count.
NTHREAD = 1


@dataclass(frozen=True)
class Hyperparameters:
    num_round: int = 50
    max_depth: int = 5
    eta: float = 0.2
    gamma: float = 4.0
    min_child_weight: float = 6.0
    subsample: float = 0.7
    seed: int = 42

    def booster_params(self) -> dict[str, object]:
        return {
            "objective": "reg:squarederror",
            "eval_metric": "rmse",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "gamma": self.gamma,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "seed": self.seed,
            "nthread": NTHREAD,
        }


def train(
    train_path: Path,
    validation_path: Path,
    model_dir: Path,
    hyperparameters: Hyperparameters = Hyperparameters(),
) -> dict[str, float]:
    """Train, save ``model/xgboost-model.json`` and return the last round's rmse on both sets."""
    y_train, x_train = read_labeled(train_path)
    y_validation, x_validation = read_labeled(validation_path)
    print(f"train: {x_train.shape[0]} rows x {x_train.shape[1]} features from {train_path}")
    print(
        f"validation: {x_validation.shape[0]} rows x {x_validation.shape[1]} features "
        f"from {validation_path}"
    )
    if x_train.shape[1] != x_validation.shape[1]:
        raise InputError(
            f"{validation_path}: has {x_validation.shape[1]} features but {train_path} has "
            f"{x_train.shape[1]}"
        )

    dtrain = xgb.DMatrix(x_train, label=y_train, nthread=NTHREAD)
    dvalidation = xgb.DMatrix(x_validation, label=y_validation, nthread=NTHREAD)
    print(f"hyperparameters: {asdict(hyperparameters)}")
    history: dict[str, dict[str, list[float]]] = {}
    booster = xgb.train(
        hyperparameters.booster_params(),
        dtrain,
        num_boost_round=hyperparameters.num_round,
        evals=[(dtrain, "train"), (dvalidation, "validation")],
        evals_result=history,
        verbose_eval=False,
    )

    model_path = Path(model_dir) / MODEL_FILE
    model_path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_path))
    metrics = {
        "train_rmse": float(history["train"]["rmse"][-1]),
        "validation_rmse": float(history["validation"]["rmse"][-1]),
    }
    print(
        f"round {hyperparameters.num_round}: train-rmse={metrics['train_rmse']:.4f} "
        f"validation-rmse={metrics['validation_rmse']:.4f}"
    )
    print(f"saved the model to {model_path}")
    return metrics


def _bounded(kind: Callable[[str], Any], *, at_least=None, above=None, at_most=None):
    """An argparse type that parses ``kind`` (int or float) and checks its bounds."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None
        if at_least is not None and value < at_least:
            raise argparse.ArgumentTypeError(f"must be at least {at_least}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be above {above}, got {text}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"must be at most {at_most}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    defaults = Hyperparameters()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, type=Path, help="folder (or file) of train CSV")
    parser.add_argument(
        "--validation", required=True, type=Path, help="folder (or file) of validation CSV"
    )
    parser.add_argument("--model", required=True, type=Path, help="output folder for the model")

    def hyperparameter(name: str, parse: Callable[[str], Any], default: Any) -> None:
        # "--max-depth" and the SageMaker-style "--max_depth" both work
        spellings = dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"])
        parser.add_argument(
            *spellings,
            dest=name,
            type=parse,
            default=default,
            help=f"default {default}",
        )

    hyperparameter("num_round", _bounded(int, at_least=1), defaults.num_round)
    hyperparameter("max_depth", _bounded(int, at_least=0), defaults.max_depth)
    hyperparameter("eta", _bounded(float, above=0.0), defaults.eta)
    hyperparameter("gamma", _bounded(float, at_least=0.0), defaults.gamma)
    hyperparameter("min_child_weight", _bounded(float, at_least=0.0), defaults.min_child_weight)
    hyperparameter("subsample", _bounded(float, above=0.0, at_most=1.0), defaults.subsample)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="default 42")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    hyperparameters = Hyperparameters(
        num_round=args.num_round,
        max_depth=args.max_depth,
        eta=args.eta,
        gamma=args.gamma,
        min_child_weight=args.min_child_weight,
        subsample=args.subsample,
        seed=args.seed,
    )
    return run_step("train", train, args.train, args.validation, args.model, hyperparameters)


if __name__ == "__main__":
    sys.exit(main())
