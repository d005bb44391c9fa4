"""MLflow pyfunc model code that modelyard ships inside its model packages.

This file is used as MLflow "models from code": `mlflow.pyfunc.save_model(python_model=<this
file>)` copies it into every package, and `mlflow.pyfunc.load_model` executes that copy and takes
the model registered with `mlflow.models.set_model` at the bottom. Nothing is pickled, so a
package loads wherever its requirements are installed, without modelyard and whatever the Python
version. That only holds while this file stays standalone: import nothing from modelyard here, and
only mlflow, numpy, pandas, joblib and xgboost (a test guards it).

Inside modelyard the module is imported normally (the packaging code computes predictions for the
signature with `InferencePipeline`, and converts raw rows with `to_frame`); it registers no model
then.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow.models
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext

# The artifact names under which the packaging code stores the pipeline's files.
PREPROCESSOR_ARTIFACT = "preprocessor"
BOOSTER_ARTIFACT = "booster"
CONFIG_ARTIFACT = "pipeline"
CONFIG_FORMAT = "modelyard-inference-pipeline/1"

__all__ = [
    "BOOSTER_ARTIFACT",
    "CONFIG_ARTIFACT",
    "CONFIG_FORMAT",
    "PREPROCESSOR_ARTIFACT",
    "InferencePipeline",
    "InferencePipelineModel",
    "PipelineInputError",
    "PipelineLoadError",
    "to_frame",
]


class PipelineInputError(ValueError):
    """The input to predict cannot be turned into the rows the model expects."""


class PipelineLoadError(RuntimeError):
    """A file of the pipeline is missing, corrupt, or does not fit the other files."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)  # the file at fault, where known


# -- input --------------------------------------------------------------------------------------


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | bytes | int | float | np.generic)


def to_frame(
    data: Any, columns: Sequence[str], numeric_columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """The model input as a DataFrame with exactly `columns`, in that order.

    Accepts a DataFrame with named columns (extra columns are dropped), a DataFrame with
    positional columns 0..n-1 (what `pd.read_csv(header=None)` gives), a list of records
    (dicts), a list of raw rows (each a sequence of len(columns) values, like CSV lines), one raw
    row, one record, or a 2-D array. Raw values may be strings as read from CSV: in
    `numeric_columns` they are parsed as numbers, and an empty field is a missing value (NaN),
    which the preprocessor imputes.
    """
    columns = list(columns)
    frame = _as_dataframe(data, columns)
    if isinstance(frame.columns, pd.RangeIndex) and len(frame.columns) == len(columns):
        frame.columns = pd.Index(columns)  # positional columns: headerless CSV or raw rows
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineInputError(
            f"the input lacks the column(s) {missing}; the model expects {columns} "
            f"(got {[str(c) for c in frame.columns]})"
        )
    frame = frame[columns].copy()
    for column in columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):  # object, or pandas 3's str
            # object dtype: a column of only missing values must not turn into float64, which
            # MLflow's signature check refuses for a string input.
            frame[column] = frame[column].map(_blank_to_nan).astype(object)
    for column in numeric_columns or ():
        frame[column] = _numbers(frame[column], column)
    return frame


def _as_dataframe(data: Any, columns: list[str]) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):  # one row, e.g. `frame.iloc[0]`
        named = all(isinstance(k, str) for k in data.index)
        data = data.to_dict() if named else data.tolist()
    if isinstance(data, Mapping):
        one_record = all(_is_scalar(v) for v in data.values())
        return pd.DataFrame([dict(data)] if one_record else dict(data))
    if isinstance(data, np.ndarray):
        data = data.tolist()
    if not isinstance(data, Sequence) or isinstance(data, str | bytes):
        raise PipelineInputError(
            f"cannot make model input rows from a {type(data).__name__}; pass a DataFrame, a list "
            f"of records (dicts) or a list of rows of {len(columns)} values ({', '.join(columns)})"
        )
    if not data:
        raise PipelineInputError("the input has no rows")
    if all(_is_scalar(v) for v in data):
        data = [data]  # a single raw row
    if all(isinstance(r, Mapping) for r in data):
        return pd.DataFrame([dict(r) for r in data])
    rows = []
    for number, row in enumerate(data, start=1):
        if isinstance(row, Mapping) or not isinstance(row, Sequence) or isinstance(row, str):
            raise PipelineInputError(
                f"row {number} is a {type(row).__name__}; pass every row as a list of "
                f"{len(columns)} values, or every row as a record (dict)"
            )
        if len(row) != len(columns):
            raise PipelineInputError(
                f"row {number} has {len(row)} values; expected {len(columns)}: {', '.join(columns)}"
            )
        rows.append(list(row))
    return pd.DataFrame(rows, columns=columns)


def _blank_to_nan(value: Any) -> Any:
    # As in the training data, an empty CSV field is a missing value for the imputer.
    if isinstance(value, str):
        value = value.strip()
        return math.nan if value == "" else value
    return value


def _numbers(values: pd.Series, column: str) -> pd.Series:
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = parsed.isna() & values.notna()
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise PipelineInputError(
            f"row {position + 1}: column '{column}' is not a number: {values.iloc[position]!r}"
        )
    return parsed


# -- the pipeline -------------------------------------------------------------------------------


class InferencePipeline:
    """A fitted scikit-learn preprocessor followed by an XGBoost booster: raw rows in, one
    prediction per row out."""

    def __init__(
        self,
        preprocessor: Any,
        booster: Any,
        columns: Sequence[str],
        numeric_columns: Sequence[str] = (),
    ) -> None:
        self.preprocessor = preprocessor
        self.booster = booster
        self.columns = list(columns)
        self.numeric_columns = list(numeric_columns)

    @classmethod
    def load(
        cls,
        preprocessor_path: str | Path,
        booster_path: str | Path,
        columns: Sequence[str] | None = None,
        numeric_columns: Sequence[str] = (),
    ) -> InferencePipeline:
        """Load the two files; `columns` defaults to the columns the preprocessor was fit on."""
        # joblib and xgboost only here: `to_frame` must work without them.
        import joblib  # type: ignore[import-untyped]
        import xgboost

        preprocessor_path, booster_path = Path(preprocessor_path), Path(booster_path)
        try:
            preprocessor = joblib.load(preprocessor_path)
        except Exception as exc:  # unpickling raises anything: EOFError, KeyError, ...
            raise PipelineLoadError(
                f"cannot load the preprocessor from {preprocessor_path}: "
                f"{type(exc).__name__}: {exc}",
                preprocessor_path,
            ) from exc
        if not callable(getattr(preprocessor, "transform", None)):
            raise PipelineLoadError(
                f"{preprocessor_path} holds a {type(preprocessor).__name__}, not a fitted "
                "preprocessor with a transform method",
                preprocessor_path,
            )
        booster = xgboost.Booster()
        try:
            booster.load_model(str(booster_path))
        except Exception as exc:  # xgboost.core.XGBoostError, with the C++ message
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise PipelineLoadError(
                f"cannot load the XGBoost model from {booster_path}: {first_line}", booster_path
            ) from exc
        if columns is None:
            fitted_on = getattr(preprocessor, "feature_names_in_", None)
            if fitted_on is None:
                raise PipelineLoadError(
                    f"the preprocessor in {preprocessor_path} was not fit on a DataFrame, so its "
                    "input column names are unknown; give the column names",
                    preprocessor_path,
                )
            columns = [str(c) for c in fitted_on]
        return cls(preprocessor, booster, columns, numeric_columns)

    @classmethod
    def from_config(
        cls, preprocessor_path: str | Path, booster_path: str | Path, config_path: str | Path
    ) -> InferencePipeline:
        """Load a packaged pipeline: the two files plus the JSON config written beside them."""
        try:
            config = json.loads(Path(config_path).read_text(encoding="utf-8"))
            if config.get("format") != CONFIG_FORMAT:
                raise ValueError(f"expected format {CONFIG_FORMAT!r}, got {config.get('format')!r}")
            columns = [str(c) for c in config["columns"]]
            numeric = [str(c) for c in config["numeric_columns"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PipelineLoadError(
                f"invalid pipeline config {config_path}: {exc}", config_path
            ) from exc
        return cls.load(preprocessor_path, booster_path, columns, numeric)

    def features(self, data: Any) -> np.ndarray:
        """The preprocessed feature matrix of the input, as the booster was trained on it."""
        frame = to_frame(data, self.columns, self.numeric_columns)
        features = np.asarray(self.preprocessor.transform(frame), dtype=np.float64)
        expected = self.booster.num_features()
        if features.shape[1] != expected:
            raise PipelineLoadError(
                f"the preprocessor makes {features.shape[1]} features but the booster expects "
                f"{expected}: they do not come from the same training run"
            )
        return features

    def predict(self, data: Any) -> np.ndarray:
        """One prediction per input row, as a 1-D float64 array."""
        import xgboost

        matrix = xgboost.DMatrix(self.features(data))
        return np.asarray(self.booster.predict(matrix), dtype=np.float64).reshape(-1)


class InferencePipelineModel(PythonModel):
    """The pyfunc face of `InferencePipeline`; its files are the package's artifacts."""

    def __init__(self) -> None:
        self.pipeline: InferencePipeline | None = None

    def load_context(self, context: PythonModelContext) -> None:
        artifacts = context.artifacts
        self.pipeline = InferencePipeline.from_config(
            artifacts[PREPROCESSOR_ARTIFACT],
            artifacts[BOOSTER_ARTIFACT],
            artifacts[CONFIG_ARTIFACT],
        )

    # MLflow reads the `model_input` annotation: pd.DataFrame means "no type-hint validation;
    # the signature decides". With a signature MLflow passes a DataFrame; without one, raw rows
    # and records arrive as they are and `to_frame` converts them.
    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        if self.pipeline is None:
            raise PipelineLoadError("the model was not loaded: load it with mlflow.pyfunc")
        return self.pipeline.predict(model_input)


# MLflow executes this file under a generated module name to load a package; register the model
# only then, not when modelyard imports the module.
if __name__ != "modelyard.registry.pyfunc_models":
    mlflow.models.set_model(InferencePipelineModel())
