"""The predictor classes, one per kind of package (`KIND_*`, what `describe()` reports):

- `_PipelinePredictor`: modelyard's inference pipeline, the preprocessor's features (compiled,
  or scikit-learn's) then the native booster.
- `_XGBoostPredictor` and `_SklearnPredictor`: MLflow `xgboost` and `sklearn` flavor packages of
  numeric inputs, the model itself on a matrix in the signature's column order (on a DataFrame
  only for scikit-learn estimators that select columns by name, or inputs of several types).
- `_PyfuncPredictor`: anything else, `mlflow.pyfunc` predicting from a DataFrame.

mlflow, xgboost and pandas are imported when a predictor is made or predicts, never when this
module is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from .base import (
    Columns,
    Floats,
    PredictError,
    Predictor,
    _as_output,
    _check_columns,
    _number_matrix,
)
from .compiled import _CompiledTransform
from .sklearn_transform import _SklearnTransform

if TYPE_CHECKING:
    import pandas as pd

KIND_PIPELINE: Final = "native:inference-pipeline"
KIND_XGBOOST: Final = "native:xgboost"
KIND_SKLEARN: Final = "native:sklearn"
KIND_PYFUNC: Final = "pyfunc"


class _PipelinePredictor(Predictor):
    """modelyard's inference pipeline: the preprocessor's features, then the native booster."""

    kind = KIND_PIPELINE

    def __init__(
        self,
        path: Path,
        columns: Sequence[str],
        transform: _CompiledTransform | _SklearnTransform,
        booster: Any,
        details: dict[str, Any],
    ) -> None:
        super().__init__(path)
        self.columns = tuple(columns)
        self._transform = transform
        self._booster = booster
        self._details = details

    def features(self, columns: Columns, rows: int) -> Floats:
        """The preprocessed feature matrix, as the booster takes it."""
        assert self.columns is not None
        _check_columns(columns, self.columns, rows)
        return self._transform(columns, rows)

    def predict(self, columns: Columns, rows: int) -> npt.NDArray[Any]:
        assert self.columns is not None
        _check_columns(columns, self.columns, rows)
        if rows == 0:
            return np.empty(0)
        features = self._transform(columns, rows)
        # the width was checked at load time; like pyfunc's Booster.predict: all trees, NaN missing
        predictions = self._booster.inplace_predict(features, validate_features=False)
        return np.asarray(predictions, dtype=np.float64).reshape(-1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._details}


class _XGBoostPredictor(Predictor):
    """An MLflow xgboost flavor package: the model on a float matrix in its column order."""

    kind = KIND_XGBOOST

    def __init__(self, path: Path, model: Any, columns: Sequence[str], details: dict[str, Any]):
        import xgboost

        super().__init__(path)
        self.columns = tuple(columns)
        self._details = details
        # a Booster predicts in place (what its pyfunc's predict(DMatrix) computes); the
        # scikit-learn API models keep their own predict (best iteration, class labels)
        if isinstance(model, xgboost.Booster):
            self._predict: Callable[..., Any] = model.inplace_predict
        else:
            self._predict = model.predict

    def predict(self, columns: Columns, rows: int) -> npt.NDArray[Any]:
        assert self.columns is not None
        _check_columns(columns, self.columns, rows)
        if rows == 0:
            return np.empty(0)
        matrix = _number_matrix(columns, self.columns, finite=False)
        return _as_output(self._predict(matrix, validate_features=False))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._details}


class _SklearnPredictor(Predictor):
    """An MLflow sklearn flavor package: the estimator's predict function on a matrix, or on a
    DataFrame typed as MLflow's schema enforcement types it (for columns of different types, or
    when the estimator needs its columns' names)."""

    kind = KIND_SKLEARN

    def __init__(
        self,
        path: Path,
        method: Callable[[Any], Any],
        columns: Sequence[tuple[str, np.dtype[Any]]],
        *,
        use_frame: bool,
        details: dict[str, Any],
    ) -> None:
        super().__init__(path)
        self._names = tuple(name for name, _ in columns)
        self.columns = self._names
        self.use_frame = use_frame
        self._types = tuple(columns)
        self._method = method
        self._all_double = all(dtype == np.float64 for _, dtype in columns)
        self._details = details

    def predict(self, columns: Columns, rows: int) -> npt.NDArray[Any]:
        assert self.columns is not None
        _check_columns(columns, self.columns, rows)
        if rows == 0:
            return np.empty(0)
        try:
            if self.use_frame:
                return _as_output(self._method(self._frame(columns)))
            with warnings.catch_warnings():
                # fit on a DataFrame, it warns of a matrix: the load-time check made it safe
                warnings.filterwarnings("ignore", _NO_NAMES_WARNING, UserWarning)
                return _as_output(self._method(self._matrix(columns)))
        except ValueError as exc:  # scikit-learn's input checks (NaN, infinity, categories)
            raise PredictError(f"the model refuses the input: {exc}") from None

    def _frame(self, columns: Columns) -> pd.DataFrame:
        import pandas as pd

        typed = {name: _typed(columns[name], dtype, name) for name, dtype in self._types}
        return pd.DataFrame(typed, columns=list(self._names))

    def _matrix(self, columns: Columns) -> npt.NDArray[Any]:
        if self._all_double:
            return _number_matrix(columns, self._names, finite=False)
        return np.column_stack([_typed(columns[n], t, n) for n, t in self._types])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._details, "input": self._input()}

    def _input(self) -> str:
        return "DataFrame" if self.use_frame else "matrix"


_NO_NAMES_WARNING: Final = "X does not have valid feature names"


def _typed(values: Sequence[Any], dtype: np.dtype[Any], name: str) -> npt.NDArray[Any]:
    """A column as MLflow's schema enforcement types it (integers must be whole numbers)."""
    if dtype.kind == "b":
        array = np.asarray(values)
        if array.dtype.kind != "b":
            raise PredictError(f"column '{name}' must hold true/false values", name)
        return array
    numbers = _number_matrix({name: values}, [name], finite=False)[:, 0]
    if dtype.kind == "f":
        return numbers.astype(dtype)
    whole = np.isfinite(numbers) & (numbers == np.round(numbers))
    if not whole.all():
        row = int(np.flatnonzero(~whole)[0])
        raise PredictError(
            f"row {row + 1}: column '{name}' must be a whole number, not {values[row]!r}", name
        )
    return numbers.astype(dtype)


class _PyfuncPredictor(Predictor):
    """Any package: `mlflow.pyfunc` predicting from a DataFrame of the columns."""

    kind = KIND_PYFUNC

    def __init__(self, path: Path, loaded: Any, reason: str | None) -> None:
        from mlflow.exceptions import MlflowException

        super().__init__(path)
        self._pyfunc = loaded.pyfunc
        names = loaded.input_names
        self.columns = None if names is None else tuple(names)
        self._schema_error = MlflowException
        self._reason = reason
        self.takes_params = self._pyfunc.metadata.get_params_schema() is not None

    def predict(self, columns: Columns, rows: int) -> npt.NDArray[Any]:
        return self._predict(columns, rows, None)

    def predict_with_params(
        self, columns: Columns, rows: int, params: Mapping[str, Any]
    ) -> npt.NDArray[Any]:
        return self._predict(columns, rows, dict(params) if self.takes_params else None)

    def _predict(
        self, columns: Columns, rows: int, params: dict[str, Any] | None
    ) -> npt.NDArray[Any]:
        import pandas as pd

        # the signature's columns that the input has (MLflow itself refuses missing required ones)
        names = list(columns) if self.columns is None else [c for c in self.columns if c in columns]
        _check_columns(columns, names, rows)
        if rows == 0:
            return np.empty(0)
        frame = pd.DataFrame({name: list(columns[name]) for name in names}, columns=names)
        try:  # MLflow checks the params against the schema, and fills in their defaults
            return _as_output(self._pyfunc.predict(frame, params=params))
        except self._schema_error as exc:  # MLflow's schema check refused the input or params
            raise PredictError(f"invalid model input: {exc.message}") from None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "native_fallback": self._reason}
