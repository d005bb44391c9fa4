"""What the server sees of a predictor: `Predictor`, `PredictError`, and reading input values.

`Predictor.predict(columns, rows)` takes column name -> list of values (what the server parses
from a request), ignores columns the model does not use, and returns one output per row. Input
values follow the pipeline's own `to_frame`: in numeric columns numbers, numeric strings and
booleans are numbers, and None, NaN and blank strings are missing values (NaN, which the
preprocessor imputes); in categorical columns strings are stripped, and None, NaN and blank
strings are missing values. (One deliberate difference: pyfunc's DataFrame keeps None as None in
a column that holds nothing else, which scikit-learn does not impute; here a missing value is
missing whatever the other rows of its batch hold, so micro-batching never changes a prediction.)

Input the model refuses (a missing column, a value that is not a number, an unknown category
where the encoder refuses them) raises `PredictError`, a ValueError naming the column where it
can.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Columns = Mapping[str, Sequence[Any]]


class PredictError(ValueError):
    """The input cannot be predicted: a column is missing or has the wrong number of values, a
    value has the wrong type, or a category is unknown where the model refuses unknown ones. The
    server answers 422; `column` names the column at fault where known."""

    http_status = 422

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class Predictor:
    """A loaded model package. `columns` are the input columns it needs, in order, when known."""

    kind: str = ""
    columns: tuple[str, ...] | None = None

    def __init__(self, path: Path) -> None:
        self.path = path

    takes_params = False  # whether a request's `params` reach the model (a params schema)

    def predict(self, columns: Columns, rows: int) -> npt.NDArray[Any]:
        """One output per row: a 1-D float64 array for regressors, else what the model returns
        (as an array). Extra columns are ignored."""
        raise NotImplementedError

    def predict_with_params(
        self, columns: Columns, rows: int, params: Mapping[str, Any]
    ) -> npt.NDArray[Any]:
        """A prediction with a request's inference parameters; a model without a params schema
        ignores them, as MLflow's scoring server does."""
        return self.predict(columns, rows)

    def describe(self) -> dict[str, Any]:
        """How this predictor predicts, for the server's health page and logs."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "columns": None if self.columns is None else list(self.columns),
        }


# -- input values -------------------------------------------------------------------------------


class _Missing:
    """A missing categorical value (None, NaN or a blank string in the input)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()


def _check_columns(columns: Columns, names: Sequence[str], rows: int) -> None:
    if rows < 0:
        raise PredictError(f"the number of rows must be 0 or more, got {rows}")
    for name in names:
        values = columns.get(name)
        if values is None:
            missing = [n for n in names if n not in columns]
            raise PredictError(
                f"the input lacks the column(s) {missing}; the model expects {list(names)}",
                missing[0],
            )
        if len(values) != rows:
            raise PredictError(f"column '{name}' has {len(values)} values for {rows} rows", name)


def _number_matrix(columns: Columns, names: Sequence[str], *, finite: bool = True) -> Floats:
    """A new (rows, len(names)) float64 matrix of the columns' values (Fortran-ordered: numpy,
    scikit-learn and XGBoost take it as it is)."""
    try:  # the common case: numbers (None is NaN) in one numpy call
        matrix = np.array([columns[name] for name in names], dtype=np.float64)
    except (ValueError, TypeError):  # blank strings, or a bad value to name
        matrix = np.array([_numbers(columns[name], name) for name in names], dtype=np.float64)
    matrix = matrix.T
    # scikit-learn refuses infinities (NaN is a missing value); so do we, naming the column
    if finite and np.isinf(matrix).any():
        row, col = (int(i) for i in np.argwhere(np.isinf(matrix))[0])
        raise PredictError(f"row {row + 1}: column '{names[col]}' is infinite", names[col])
    return matrix


def _numbers(values: Sequence[Any], name: str) -> list[float]:
    return [_number(value, name, row) for row, value in enumerate(values, start=1)]


def _number(value: Any, name: str, row: int) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return math.nan  # an empty CSV field is a missing value, as in to_frame
        try:
            return float(text)
        except ValueError:
            pass
    elif isinstance(value, int | float | np.number):
        return float(value)
    raise PredictError(f"row {row}: column '{name}' is not a number: {value!r}", name)


def _category(value: Any) -> Any:
    """A categorical value as to_frame leaves it: stripped, with _MISSING for missing ones."""
    if isinstance(value, str):
        value = value.strip()
        return value if value else _MISSING
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _MISSING
    return value


def _as_output(predictions: Any) -> npt.NDArray[Any]:
    array = np.asarray(predictions)  # also DataFrames and Series
    if array.dtype.kind == "f" and array.dtype != np.float64:
        array = array.astype(np.float64)
    return array
