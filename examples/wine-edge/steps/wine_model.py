"""Loading and running the trained booster, shared by evaluate.py and bundle.py.

Imported as ``import wine_model`` (the script's folder is first on ``sys.path``); listed under
those steps' ``code:``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xgboost as xgb
from wine_io import MODEL_COLUMNS, InputError

MODEL_FILE = "model.json"


def model_file(model_path: Path) -> Path:
    """The ``model.json`` of a model folder, or ``model_path`` itself when it is a file."""
    model_path = Path(model_path)
    if not model_path.exists():
        raise InputError(f"{model_path}: no such model folder or file")
    file = model_path / MODEL_FILE if model_path.is_dir() else model_path
    if not file.is_file():
        raise InputError(f"{model_path}: folder has no {MODEL_FILE}")
    return file


def load_booster(model_path: Path) -> xgb.Booster:
    """Load ``model.json`` from a model folder (or the file itself), trained on MODEL_COLUMNS."""
    file = model_file(model_path)
    booster = xgb.Booster()
    try:
        booster.load_model(str(file))
    except xgb.core.XGBoostError as exc:
        first_line = (str(exc).strip().splitlines() or ["unknown error"])[0]
        raise InputError(f"{file}: not a valid XGBoost model: {first_line}") from None
    if booster.feature_names != list(MODEL_COLUMNS):
        raise InputError(
            f"{file}: the model's features are {booster.feature_names}, expected "
            f"{list(MODEL_COLUMNS)} (train it with steps/train.py)"
        )
    return booster


def predict(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """Predictions for rows of the 13 model columns, in MODEL_COLUMNS order."""
    return booster.predict(xgb.DMatrix(features, feature_names=list(MODEL_COLUMNS)))
