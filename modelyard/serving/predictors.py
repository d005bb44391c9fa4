"""Predictors: an MLflow model package loaded for serving, predicting from columns of values.

`load_predictor(folder)` picks the fastest way to predict with a package that gives the same
predictions as `mlflow.pyfunc.load_model(folder).predict(DataFrame)`:

- modelyard's inference pipeline (a fitted scikit-learn preprocessor and an XGBoost booster, see
  `modelyard/registry/pyfunc_models.py`): the fitted ColumnTransformer is compiled into a few
  numpy operations per block of columns, and the booster predicts in place from that matrix. A
  preprocessor with a part the compiler does not know runs as scikit-learn on a DataFrame built
  once per batch, still with the native booster; `describe()` says which, and why.
  Packaging writes the compiled form beside the preprocessor (`preprocessor.compiled.json`, see
  `write_compiled_preprocessor`), checked against scikit-learn there; a package that has it, for
  the very preprocessor.joblib it holds, loads with numpy alone: nothing is unpickled, and the
  booster runs through XGBoost's C library, as `import xgboost` imports scikit-learn, scipy and
  pandas (about a second). `verify=True` checks it against scikit-learn again.
- MLflow `xgboost` and `sklearn` flavor packages of numeric inputs: the model itself, on a matrix
  in the signature's column order (on a DataFrame only for scikit-learn estimators that select
  columns by name, or inputs of several types).
- anything else, or `native=False`: `mlflow.pyfunc.load_model(folder).predict(DataFrame)`.

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
can; load problems raise `ArtifactError`. mlflow, xgboost, scikit-learn and pandas are imported
when a package is loaded (if at all), never when this module is.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import importlib.util
import json
import math
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from modelyard.errors import ArtifactError

# Private helpers of the packaging module: one reading of MLmodel files for all of modelyard.
from modelyard.registry.packaging import (
    incomplete_error,
    missing_files,
    parse_signature,
    read_mlmodel,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "KIND_PIPELINE",
    "KIND_PYFUNC",
    "KIND_SKLEARN",
    "KIND_XGBOOST",
    "PRECOMPILED_FILE",
    "PredictError",
    "Predictor",
    "load_predictor",
    "write_compiled_preprocessor",
]

KIND_PIPELINE: Final = "native:inference-pipeline"
KIND_XGBOOST: Final = "native:xgboost"
KIND_SKLEARN: Final = "native:sklearn"
KIND_PYFUNC: Final = "pyfunc"

# As in modelyard/registry/pyfunc_models.py, which imports mlflow: a test keeps them equal.
_CODE_MODEL_LOADER: Final = "mlflow.pyfunc.loaders.code_model"
_PREPROCESSOR_ARTIFACT: Final = "preprocessor"
_BOOSTER_ARTIFACT: Final = "booster"
_CONFIG_ARTIFACT: Final = "pipeline"
_CONFIG_FORMAT: Final = "modelyard-inference-pipeline/1"

# The compiled preprocessor, written by packaging beside the preprocessor's joblib file.
PRECOMPILED_FILE: Final = "preprocessor.compiled.json"
_PRECOMPILED_FORMAT: Final = "modelyard-compiled-preprocessor/1"  # the file
_TRANSFORM_FORMAT: Final = "modelyard-compiled-transform/1"  # its "transform": to_json()

# MLflow signature types that the native flavor predictors take, as numpy dtypes.
_NUMERIC_TYPES: Final[dict[str, np.dtype[Any]]] = {
    "double": np.dtype(np.float64),
    "float": np.dtype(np.float32),
    "long": np.dtype(np.int64),
    "integer": np.dtype(np.int32),
    "boolean": np.dtype(np.bool_),
}

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


# -- the compiled preprocessor: numpy operations, step by step as scikit-learn does them ---------


class _Unsupported(Exception):
    """The preprocessor has a part the compiler does not know (the message says which)."""


class _NumericStep:
    """An operation on a (rows, columns) float64 matrix, which it may change in place."""

    def apply(self, x: Floats) -> Floats:
        raise NotImplementedError

    def sliced(self, start: int, stop: int) -> _NumericStep:
        """The step for output columns [start, stop) only (steps after a ColumnTransformer)."""
        raise _Unsupported(f"{self} after a ColumnTransformer")

    def to_json(self) -> dict[str, Any]:
        raise TypeError(f"the step {self} has no JSON form")


@dataclass(frozen=True)
class _Elementwise(_NumericStep):
    """x = op(x, value), value per column (or one scalar), in place as scikit-learn does it."""

    name: str
    op: Callable[..., Any]
    value: Floats

    def apply(self, x: Floats) -> Floats:
        self.op(x, self.value, out=x)
        return x

    def sliced(self, start: int, stop: int) -> _NumericStep:
        value = self.value if self.value.ndim == 0 else self.value[start:stop]
        return _Elementwise(self.name, self.op, value)

    def to_json(self) -> dict[str, Any]:
        op = getattr(self.op, "__name__", "")
        if _UFUNCS.get(op) is not self.op:
            raise TypeError(f"the step {self} applies {self.op!r}, which has no JSON name")
        return {
            "step": "elementwise",
            "name": self.name,
            "op": op,
            "value": _floats_json(self.value),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Elementwise:
        op = _get(data, "op", str)
        if op not in _UFUNCS:
            raise ValueError(f"unknown operation {op!r}")
        value = _floats(data.get("value"))
        if value.ndim > 1:
            raise ValueError(f"the value of '{op}' has {value.ndim} dimensions")
        return cls(_get(data, "name", str), _UFUNCS[op], value)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class _FillNaN(_NumericStep):
    """SimpleImputer on numbers: NaN -> the fitted statistic of its column."""

    fill: Floats
    strategy: str

    def apply(self, x: Floats) -> Floats:
        mask = np.isnan(x)
        if mask.any():
            np.copyto(x, self.fill, where=mask)  # the fill broadcasts over the rows
        return x

    def sliced(self, start: int, stop: int) -> _NumericStep:
        return _FillNaN(self.fill[start:stop], self.strategy)

    def to_json(self) -> dict[str, Any]:
        return {"step": "fill-nan", "strategy": self.strategy, "fill": _floats_json(self.fill)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _FillNaN:
        return cls(_floats(data.get("fill"), ndim=1), _get(data, "strategy", str))

    def __str__(self) -> str:
        return f"impute({self.strategy})"


@dataclass(frozen=True)
class _Clip(_NumericStep):
    low: float
    high: float

    def apply(self, x: Floats) -> Floats:
        np.clip(x, self.low, self.high, out=x)
        return x

    def sliced(self, start: int, stop: int) -> _NumericStep:
        return self

    def to_json(self) -> dict[str, Any]:
        return {"step": "clip", "low": _floats_json(self.low), "high": _floats_json(self.high)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Clip:
        low, high = (_floats(data.get(key), ndim=0) for key in ("low", "high"))
        return cls(float(low), float(high))

    def __str__(self) -> str:
        return "clip"


@dataclass(frozen=True)
class _KeepNumbers(_NumericStep):
    """SimpleImputer drops the columns it saw no value of (keep_empty_features=False)."""

    keep: npt.NDArray[np.intp]

    def apply(self, x: Floats) -> Floats:
        return x[:, self.keep]

    def to_json(self) -> dict[str, Any]:
        return {"step": "keep", "keep": [int(i) for i in self.keep]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _KeepNumbers:
        keep = _ints(data, "keep")
        if any(i < 0 for i in keep):
            raise ValueError(f"negative column indices to keep: {list(keep)}")
        return cls(np.asarray(keep, dtype=np.intp))

    def __str__(self) -> str:
        return "drop-empty"


class _CategoryStep:
    """An imputer's operation on categorical values; the encoder after it applies it, value by
    value (see _OneHot.encode_strings)."""


@dataclass(frozen=True)
class _FillMissingCategory(_CategoryStep):
    fill: tuple[str, ...]
    strategy: str

    def __str__(self) -> str:
        return f"impute({self.strategy})"


@dataclass(frozen=True)
class _KeepCategories(_CategoryStep):
    keep: tuple[int, ...]

    def __str__(self) -> str:
        return "drop-empty"


@dataclass(frozen=True)
class _OneHot:
    """OneHotEncoder (no drop, no infrequent categories): one 0/1 column per fitted category."""

    names: tuple[str, ...]  # the encoder's input columns
    lookups: tuple[dict[Any, int], ...]  # category -> index, per input column
    offsets: tuple[int, ...]  # the first output column of each input column
    width: int
    strings: bool  # string categories (else numbers)
    refuse_unknown: bool  # handle_unknown='error'
    fills: tuple[str | None, ...] = ()  # what an imputer before the encoder fills in, per column

    @cached_property
    def fast(self) -> tuple[dict[Any, int], ...]:
        """Raw input value -> index for the values that need no cleaning (stripped strings)."""
        return tuple(
            {k: i for k, i in lookup.items() if isinstance(k, str) and k and k == k.strip()}
            for lookup in self.lookups
        )

    def encode_strings(self, columns: Columns, rows: int) -> Floats:
        """Encode string columns straight from the input: most values are known categories, so
        they are looked up as they are, and only the others are cleaned and imputed first."""
        hot: list[int] = []  # flat indices of the ones
        for j, name in enumerate(self.names):
            fast, offset = self.fast[j], self.offsets[j]
            for row, value in enumerate(columns[name]):
                try:
                    index = fast.get(value)
                except TypeError:  # unhashable, e.g. a list
                    index = None
                if index is None:
                    index = self._resolve(j, row, value)
                    if index < 0:
                        continue
                hot.append(row * self.width + offset + index)
        return self._ones(hot, rows)

    def encode_numbers(self, x: Floats) -> Floats:
        hot: list[int] = []
        for j, column in enumerate(x.T.tolist()):
            lookup, offset = self.lookups[j], self.offsets[j]
            for row, value in enumerate(column):
                index = lookup.get(value)
                if index is None:
                    index = self._unknown(j, row, value)
                    if index < 0:
                        continue
                hot.append(row * self.width + offset + index)
        return self._ones(hot, x.shape[0])

    def _ones(self, hot: list[int], rows: int) -> Floats:
        out = np.zeros((rows, self.width))
        if hot:
            out.reshape(-1)[hot] = 1.0
        return out

    def _resolve(self, j: int, row: int, raw: Any) -> int:
        value = _category(raw)
        if value is _MISSING and self.fills and self.fills[j] is not None:
            value = self.fills[j]
        try:
            index = self.lookups[j].get(value)
        except TypeError:  # unhashable
            index = None
        return self._unknown(j, row, value) if index is None else index

    def _unknown(self, j: int, row: int, value: Any) -> int:
        name = self.names[j]
        missing = value is _MISSING or (isinstance(value, float) and math.isnan(value))
        if missing and _MISSING in self.lookups[j]:
            return self.lookups[j][_MISSING]  # scikit-learn's NaN category
        if not missing and self.strings and not isinstance(value, str):
            raise PredictError(f"row {row + 1}: column '{name}' must be a string, not {value!r}")
        if self.refuse_unknown:
            known = ", ".join(repr(k) for k in self.lookups[j] if k is not _MISSING)
            what = "has no value" if missing else f"has the unknown category {value!r}"
            raise PredictError(f"row {row + 1}: column '{name}' {what} (known: {known})", name)
        return -1  # handle_unknown='ignore': all zeros

    def to_json(self) -> dict[str, Any]:
        """The categories of each column in index order (offsets and width follow from them)."""
        return {
            "names": list(self.names),
            "categories": [_categories_json(lookup) for lookup in self.lookups],
            "strings": self.strings,
            "refuse_unknown": self.refuse_unknown,
            "fills": [_value_json(fill) for fill in self.fills],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _OneHot:
        names = _strings(data, "names")
        columns = _get(data, "categories", list)
        fills = tuple(_value(fill) for fill in _get(data, "fills", list))
        if len(columns) != len(names) or len(fills) not in (0, len(names)):
            raise ValueError(f"{len(names)} columns with {len(columns)} category lists")
        lookups = tuple(_lookup(categories) for categories in columns)
        offsets = [0]
        for lookup in lookups:
            offsets.append(offsets[-1] + len(lookup))
        return cls(
            names=names,
            lookups=lookups,
            offsets=tuple(offsets[:-1]),
            width=offsets[-1],
            strings=_get(data, "strings", bool),
            refuse_unknown=_get(data, "refuse_unknown", bool),
            fills=fills,
        )

    def __str__(self) -> str:
        return f"one-hot({self.width})"


_Op = _NumericStep | _CategoryStep | _OneHot


@dataclass
class _Block:
    """The columns one transformer of the ColumnTransformer takes, and its compiled steps."""

    label: str
    inputs: tuple[str, ...]
    categorical: bool  # the inputs are strings, which `encoder` encodes
    chain: list[str]  # the steps, for describe()
    before: list[_NumericStep] = field(default_factory=list)  # numbers, before any encoder
    encoder: _OneHot | None = None
    after: list[_NumericStep] = field(default_factory=list)  # on the encoder's output
    start: int = 0
    stop: int = 0

    def run(self, columns: Columns, rows: int) -> Floats:
        if self.categorical:
            assert self.encoder is not None  # _assemble made sure
            x = self.encoder.encode_strings(columns, rows)
        else:
            x = _number_matrix(columns, self.inputs)
            for numeric in self.before:
                x = numeric.apply(x)
            if self.encoder is not None:
                x = self.encoder.encode_numbers(x)
        for numeric in self.after:
            x = numeric.apply(x)
        return x

    def describe(self) -> str:
        chain = " -> ".join(self.chain)
        return f"{self.label}: {chain} ({', '.join(self.inputs)}) -> [{self.start}:{self.stop}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "inputs": list(self.inputs),
            "categorical": self.categorical,
            "chain": list(self.chain),
            "before": [step.to_json() for step in self.before],
            "encoder": None if self.encoder is None else self.encoder.to_json(),
            "after": [step.to_json() for step in self.after],
            "start": self.start,
            "stop": self.stop,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Block:
        encoder = data.get("encoder")
        block = cls(
            label=_get(data, "label", str),
            inputs=_strings(data, "inputs"),
            categorical=_get(data, "categorical", bool),
            chain=list(_strings(data, "chain")),
            before=[_step(step) for step in _get(data, "before", list)],
            encoder=None if encoder is None else _OneHot.from_json(_get(data, "encoder", dict)),
            after=[_step(step) for step in _get(data, "after", list)],
            start=_get(data, "start", int),
            stop=_get(data, "stop", int),
        )
        block.check()
        return block

    def check(self) -> None:
        """What run() relies on and _assemble makes sure of (ValueError if not so)."""
        if self.encoder is not None and self.encoder.strings != self.categorical:
            raise ValueError(f"'{self.label}': a one-hot encoder of the wrong kind of values")
        if self.categorical and (self.encoder is None or self.before):
            raise ValueError(f"'{self.label}': categories without an encoder, or numeric steps")
        if self.encoder is not None and not set(self.encoder.names) <= set(self.inputs):
            raise ValueError(f"'{self.label}': the encoder takes columns that are not inputs")


@dataclass(frozen=True)
class _CompiledTransform:
    blocks: tuple[_Block, ...]
    width: int

    def __call__(self, columns: Columns, rows: int) -> Floats:
        if len(self.blocks) == 1:
            return self.blocks[0].run(columns, rows)
        return np.concatenate([block.run(columns, rows) for block in self.blocks], axis=1)

    def describe(self) -> list[str]:
        return [block.describe() for block in self.blocks]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict that from_json turns back into this transform (plain JSON: NaN and
        infinities are strings, values of other types than JSON's are tagged objects)."""
        return {
            "format": _TRANSFORM_FORMAT,
            "width": self.width,
            "blocks": [block.to_json() for block in self.blocks],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _CompiledTransform:
        """The transform to_json wrote; ValueError for anything else (it imports only numpy)."""
        if _get(data, "format", str) != _TRANSFORM_FORMAT:
            raise ValueError(f"the format {data['format']!r} is not {_TRANSFORM_FORMAT!r}")
        blocks = tuple(_Block.from_json(block) for block in _get(data, "blocks", list))
        width = _get(data, "width", int)
        stop = 0
        for block in blocks:  # side by side, as _place lays them out
            if block.start != stop or block.stop < block.start:
                raise ValueError(f"block '{block.label}' is not at [{stop}:...]")
            stop = block.stop
        if not blocks or stop != width:
            raise ValueError(f"the blocks make {stop} features, not {width}")
        return cls(blocks, width)


def _compile(preprocessor: Any, columns: Sequence[str]) -> _CompiledTransform:
    """The fitted preprocessor as numpy operations; _Unsupported if a part is not known."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    fitted_on = getattr(preprocessor, "feature_names_in_", None)
    names = [str(c) for c in fitted_on] if fitted_on is not None else list(columns)
    if not set(names) <= set(columns):
        raise _Unsupported(f"the preprocessor takes columns that are not inputs: {names}")
    root, rest = preprocessor, []
    if type(root) is Pipeline:
        steps = [step for _, step in root.steps if not _is_passthrough(step)]
        if steps and type(steps[0]) is ColumnTransformer:
            root, rest = steps[0], steps[1:]
    if type(root) is ColumnTransformer:
        blocks = _column_transformer_blocks(root, names)
    else:
        blocks = [_assemble("preprocessor", names, _chain_ops(root, names))]
    width = _place(blocks)
    for estimator in rest:  # e.g. a scaler over the whole ColumnTransformer output
        for op in _chain_ops(estimator, [f"x{i}" for i in range(width)]):
            if not isinstance(op, _NumericStep):
                raise _Unsupported(f"{op} after a ColumnTransformer")
            for block in blocks:
                block.after.append(op.sliced(block.start, block.stop))
                block.chain.append(str(op))
    return _CompiledTransform(tuple(blocks), width)


def _place(blocks: list[_Block]) -> int:
    start = 0
    for block in blocks:
        block.start, start = start, start + (block.stop - block.start)
        block.stop = start
    return start


def _column_transformer_blocks(ct: Any, names: list[str]) -> list[_Block]:
    weights = ct.transformer_weights or {}
    widths = getattr(ct, "output_indices_", {})
    blocks = []
    for label, transformer, spec in ct.transformers_:
        if _is_drop(transformer):
            continue
        inputs = _resolve_columns(spec, names)
        if not inputs:
            continue  # no columns: no output
        ops = [] if _is_passthrough(transformer) else _chain_ops(transformer, inputs)
        if weights.get(label) is not None:
            weight = np.asarray(weights[label], dtype=np.float64)  # one scalar for the block
            ops.append(_Elementwise("weight", np.multiply, weight))
        block = _assemble(str(label), inputs, ops)
        expected = widths.get(label)
        if expected is not None and expected.stop - expected.start != block.stop:
            raise _Unsupported(f"the output width of '{label}' is not what the compiler makes")
        blocks.append(block)
    if not blocks:
        raise _Unsupported("the ColumnTransformer outputs no columns")
    return blocks


def _resolve_columns(spec: Any, names: list[str]) -> list[str]:
    """A ColumnTransformer's column selection as column names (in selection order)."""
    if isinstance(spec, str):
        selected: list[Any] = [spec]
    elif isinstance(spec, int | np.integer) and not isinstance(spec, bool):
        selected = [int(spec)]
    elif isinstance(spec, list | tuple | np.ndarray) or type(spec).__name__ == "Index":
        selected = list(spec)
    else:  # slices, callables
        raise _Unsupported(f"a column selection {spec!r}")
    if selected and all(isinstance(s, bool | np.bool_) for s in selected):
        return [name for name, keep in zip(names, selected, strict=True) if keep]
    resolved = []
    for item in selected:
        if isinstance(item, str) and item in names:
            resolved.append(item)
        elif isinstance(item, int | np.integer) and not isinstance(item, bool):
            resolved.append(names[int(item)])
        else:
            raise _Unsupported(f"a column selection {spec!r}")
    return resolved


def _is_drop(transformer: Any) -> bool:
    return isinstance(transformer, str) and transformer == "drop"


def _is_passthrough(transformer: Any) -> bool:
    from sklearn.preprocessing import FunctionTransformer

    if transformer is None or (isinstance(transformer, str) and transformer == "passthrough"):
        return True
    # A fitted ColumnTransformer keeps 'passthrough' as an identity FunctionTransformer.
    return (
        type(transformer) is FunctionTransformer
        and transformer.func is None
        and transformer.inverse_func is None
    )


def _chain_ops(estimator: Any, inputs: list[str]) -> list[_Op]:
    """The operations of a transformer (or Pipeline of them) on `inputs`, in order."""
    from sklearn.pipeline import Pipeline

    ops: list[_Op] = []
    names: list[str] | None = list(inputs)  # None once encoded
    width = len(inputs)
    parts = [estimator]
    while parts:
        part = parts.pop(0)
        if type(part) is Pipeline:
            parts[:0] = [step for _, step in part.steps]
            continue
        if _is_passthrough(part):
            continue
        new, names, width = _leaf_ops(part, names, width)
        ops += new
    return ops


def _leaf_ops(
    est: Any, names: list[str] | None, width: int
) -> tuple[list[_Op], list[str] | None, int]:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

    kind = type(est)  # exact types: a subclass may transform differently
    if kind is SimpleImputer:
        ops, keep = _imputer_ops(est, width)
        if names is not None and keep is not None:
            names = [names[i] for i in keep]
        return ops, names, width if keep is None else len(keep)
    if kind is StandardScaler:
        ops = []
        if est.with_mean:
            ops.append(_Elementwise("center", np.subtract, _vector(est.mean_, width, est)))
        if est.with_std:
            ops.append(_Elementwise("scale", np.divide, _vector(est.scale_, width, est)))
        return ops, names, width
    if kind is MinMaxScaler:
        ops = [
            _Elementwise("minmax-scale", np.multiply, _vector(est.scale_, width, est)),
            _Elementwise("minmax-shift", np.add, _vector(est.min_, width, est)),
        ]
        if est.clip:
            ops.append(_Clip(float(est.feature_range[0]), float(est.feature_range[1])))
        return ops, names, width
    if kind is OneHotEncoder:
        encoder = _one_hot(est, names, width)
        return [encoder], None, encoder.width
    raise _Unsupported(f"{kind.__name__} is not one the compiler knows")


def _vector(values: Any, width: int, est: Any) -> Floats:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (width,):
        raise _Unsupported(f"{type(est).__name__} has {array.size} parameters for {width} columns")
    return array


def _imputer_ops(imputer: Any, width: int) -> tuple[list[_Op], list[int] | None]:
    """SimpleImputer.transform: drop the columns without a statistic, then fill the missing."""
    if imputer.add_indicator:
        raise _Unsupported("SimpleImputer(add_indicator=True)")
    missing = imputer.missing_values
    if not (isinstance(missing, float) and math.isnan(missing)):
        raise _Unsupported(f"SimpleImputer(missing_values={missing!r})")
    statistics = np.asarray(imputer.statistics_)
    if statistics.shape != (width,):
        raise _Unsupported(f"SimpleImputer has {statistics.size} statistics for {width} columns")
    # strings or numbers: the dtype seen in fit (a constant's statistics are objects either way)
    fit_dtype = getattr(imputer, "_fit_dtype", None)
    if fit_dtype is not None:
        categorical = np.dtype(fit_dtype).kind == "O"
    else:
        categorical = any(isinstance(value, str) for value in statistics)
    # transform casts the statistics to that dtype (the most frequent of ints is an int)
    fill_dtype = getattr(imputer, "_fill_dtype", None) or statistics.dtype
    keep: list[int] | None = None
    if not imputer.keep_empty_features:
        empty = statistics != statistics  # NaN, also in object arrays
        if empty.any():
            keep = [int(i) for i in np.flatnonzero(~empty)]
            statistics = statistics[keep]
    fill = statistics.astype(fill_dtype)
    strategy = str(imputer.strategy)
    ops: list[_Op] = []
    if categorical:
        if not all(isinstance(value, str) for value in fill):
            raise _Unsupported("SimpleImputer on categories with a fill value that is no string")
        if keep is not None:
            ops.append(_KeepCategories(tuple(keep)))
        ops.append(_FillMissingCategory(tuple(str(v) for v in fill), strategy))
    else:
        if keep is not None:
            ops.append(_KeepNumbers(np.asarray(keep, dtype=np.intp)))
        ops.append(_FillNaN(fill.astype(np.float64), strategy))
    return ops, keep


def _one_hot(encoder: Any, names: list[str] | None, width: int) -> _OneHot:
    if names is None:
        raise _Unsupported("a OneHotEncoder after another OneHotEncoder")
    if getattr(encoder, "drop_idx_", None) is not None:
        raise _Unsupported(f"OneHotEncoder(drop={encoder.drop!r})")
    if getattr(encoder, "_infrequent_enabled", False):
        raise _Unsupported("OneHotEncoder with infrequent categories")
    if encoder.handle_unknown not in ("ignore", "error"):
        raise _Unsupported(f"OneHotEncoder(handle_unknown={encoder.handle_unknown!r})")
    if np.dtype(encoder.dtype) != np.float64:
        raise _Unsupported(f"OneHotEncoder(dtype={encoder.dtype!r})")
    if len(encoder.categories_) != width:
        raise _Unsupported(f"OneHotEncoder has categories for {len(encoder.categories_)} columns")
    kinds = {np.asarray(c).dtype.kind for c in encoder.categories_}
    strings = kinds <= {"O", "U"}
    if not strings and not kinds <= {"f", "i", "u"}:
        raise _Unsupported("OneHotEncoder with categories that are neither strings nor numbers")
    lookups, offsets = [], []
    offset = 0
    for categories in encoder.categories_:
        lookups.append(_category_lookup(list(categories), strings))
        offsets.append(offset)
        offset += len(categories)
    return _OneHot(
        names=tuple(names),
        lookups=tuple(lookups),
        offsets=tuple(offsets),
        width=offset,
        strings=strings,
        refuse_unknown=encoder.handle_unknown == "error",
    )


def _category_lookup(categories: list[Any], strings: bool) -> dict[Any, int]:
    lookup: dict[Any, int] = {}
    for index, category in enumerate(categories):
        if isinstance(category, float) and math.isnan(category):
            lookup[_MISSING] = index  # scikit-learn's category of missing values
        elif strings and isinstance(category, str):
            lookup[category] = index
        elif not strings and isinstance(category, int | float | np.number):
            lookup[float(category)] = index
        else:
            raise _Unsupported(f"OneHotEncoder with the category {category!r}")
    return lookup


def _assemble(label: str, inputs: list[str], ops: list[_Op]) -> _Block:
    """A block from its ops, checking that they chain: categories are encoded, numbers stay."""
    first = ops[0] if ops else None
    categorical = isinstance(first, _CategoryStep) or (isinstance(first, _OneHot) and first.strings)
    chain = [str(op) for op in ops] or ["passthrough"]
    block = _Block(label, tuple(inputs), categorical, chain)
    fills: list[str | None] = [None] * len(inputs)  # imputed strings, folded into the encoder
    for op in ops:
        if block.encoder is not None:
            if not isinstance(op, _NumericStep):
                raise _Unsupported(f"{op} after a OneHotEncoder")
            block.after.append(op)
        elif isinstance(op, _OneHot):
            if op.strings != categorical:
                raise _Unsupported("a OneHotEncoder of strings on numbers, or the reverse")
            block.encoder = replace(op, fills=tuple(fills)) if categorical else op
        elif isinstance(op, _KeepCategories) and categorical:
            fills = [fills[i] for i in op.keep]
        elif isinstance(op, _FillMissingCategory) and categorical:
            # a value filled in is no longer missing: a second imputer changes nothing
            fills = [
                old if old is not None else new for old, new in zip(fills, op.fill, strict=True)
            ]
        elif isinstance(op, _NumericStep) and not categorical:
            block.before.append(op)
        else:
            raise _Unsupported(f"{op} on {'categories' if categorical else 'numbers'}")
    if categorical and block.encoder is None:
        raise _Unsupported(f"'{label}' outputs strings, not numbers")
    block.stop = _width(inputs, ops)
    return block


def _width(inputs: list[str], ops: list[_Op]) -> int:
    width = len(inputs)
    for op in ops:
        if isinstance(op, _OneHot):
            width = op.width
        elif isinstance(op, _KeepNumbers | _KeepCategories):
            width = len(op.keep)
    return width


# -- the compiled transform as JSON: what packaging writes so that serving needs numpy alone -------

_T = TypeVar("_T")

# The numpy functions an _Elementwise step may name (JSON names nothing else to call).
_UFUNCS: Final[dict[str, Callable[..., Any]]] = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
}
_NONFINITE: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _get(data: Any, key: str, kind: type[_T]) -> _T:
    """data[key], which must be a `kind`: a ValueError says what else the JSON holds."""
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object with '{key}', got {type(data).__name__}")
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"'{key}' must be a {kind.__name__}, not {value!r:.60}")
    return value


def _strings(data: Any, key: str) -> tuple[str, ...]:
    values = _get(data, key, list)
    if not all(isinstance(value, str) for value in values):
        raise ValueError(f"'{key}' must be a list of strings")
    return tuple(values)


def _ints(data: Any, key: str) -> tuple[int, ...]:
    values = _get(data, key, list)
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        raise ValueError(f"'{key}' must be a list of integers")
    return tuple(values)


def _floats_json(array: Any) -> Any:
    """Floats as a number or (nested) lists of numbers, with "nan", "inf" and "-inf" for the
    values JSON has no number for."""
    return _finite_or_name(np.asarray(array, dtype=np.float64).tolist())


def _finite_or_name(value: Any) -> Any:
    if isinstance(value, list):
        return [_finite_or_name(item) for item in value]
    return value if math.isfinite(value) else str(value)  # str(): "nan", "inf", "-inf"


def _floats(data: Any, ndim: int | None = None) -> Floats:
    """The float64 array _floats_json wrote (of `ndim` dimensions, if given)."""
    array = np.array(_number_or_name(data), dtype=np.float64)  # ragged lists: ValueError
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"expected {ndim} dimension(s) of numbers, got {array.ndim}")
    return array


def _number_or_name(data: Any) -> Any:
    if isinstance(data, list):
        return [_number_or_name(item) for item in data]
    if isinstance(data, str) and data in _NONFINITE:
        return _NONFINITE[data]
    if isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    raise ValueError(f"{data!r:.60} is not a number")


def _value_json(value: Any) -> Any:
    """A category, fill or input value, so that it loads back as the same value of the same
    type: strings, integers, floats, booleans and None as JSON has them, the rest tagged."""
    if value is _MISSING:
        return {"missing": True}
    if isinstance(value, np.generic):
        value = value.item()  # numpy scalars as the Python values they compare equal to
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": str(value)}
    raise TypeError(f"the value {value!r} ({type(value).__name__}) has no JSON form")


def _value(data: Any) -> Any:
    if isinstance(data, dict):
        if data == {"missing": True}:
            return _MISSING
        if list(data) == ["float"] and data["float"] in _NONFINITE:
            return _NONFINITE[data["float"]]
        raise ValueError(f"unknown tagged value {data!r:.60}")
    if data is None or isinstance(data, str | bool | int | float):
        return data
    raise ValueError(f"{data!r:.60} is not a value")


def _categories_json(lookup: Mapping[Any, int]) -> list[Any]:
    """An encoder column's categories in index order (its lookup's keys)."""
    ordered = sorted(lookup, key=lookup.__getitem__)
    if [lookup[category] for category in ordered] != list(range(len(lookup))):
        raise ValueError("the category indices are not 0, 1, 2, ...")
    return [_value_json(category) for category in ordered]


def _lookup(data: Any) -> dict[Any, int]:
    if not isinstance(data, list):
        raise ValueError(f"the categories of a column must be a list, not {data!r:.60}")
    lookup = {_value(category): index for index, category in enumerate(data)}
    if len(lookup) != len(data):
        raise ValueError(f"repeated categories in {data!r:.60}")
    return lookup


def _step(data: Any) -> _NumericStep:
    readers: dict[str, Callable[[Mapping[str, Any]], _NumericStep]] = {
        "elementwise": _Elementwise.from_json,
        "fill-nan": _FillNaN.from_json,
        "clip": _Clip.from_json,
        "keep": _KeepNumbers.from_json,
    }
    kind = _get(data, "step", str)
    if kind not in readers:
        raise ValueError(f"unknown step {kind!r}")
    return readers[kind](data)


# -- scikit-learn on a DataFrame: the fallback for preprocessors the compiler does not know -------


@dataclass(frozen=True)
class _SklearnTransform:
    preprocessor: Any
    columns: tuple[str, ...]
    numeric: frozenset[str]

    def __call__(self, columns: Columns, rows: int) -> Floats:
        frame = self.frame(columns)
        try:
            features = self.preprocessor.transform(frame)
        except (ValueError, TypeError) as exc:  # unknown categories, values of a wrong type
            raise PredictError(f"the preprocessor refuses the input: {exc}") from None
        if hasattr(features, "toarray"):  # a sparse matrix
            features = features.toarray()
        return np.asarray(features, dtype=np.float64)

    def frame(self, columns: Columns) -> pd.DataFrame:
        """The input as the pipeline's to_frame makes it (numbers parsed, blanks missing)."""
        import pandas as pd

        data: dict[str, Any] = {}
        for name in self.columns:
            if name in self.numeric:
                data[name] = _number_matrix(columns, [name], finite=False)[:, 0]
            else:
                values = [_category(v) for v in columns[name]]
                data[name] = np.array(
                    [math.nan if v is _MISSING else v for v in values], dtype=object
                )
        return pd.DataFrame(data, columns=list(self.columns))


# -- predictors ---------------------------------------------------------------------------------


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


# -- loading ------------------------------------------------------------------------------------


class _NotNative(Exception):
    """The package has no native predictor (the message says why): use pyfunc."""


def load_predictor(
    folder: Path, *, native: bool = True, nthread: int = 1, verify: bool = False
) -> Predictor:
    """The predictor of the MLflow model package in `folder` (see the module docstring).

    `native=False` always predicts through mlflow.pyfunc. `nthread` is XGBoost's threads per
    prediction: 1 is fastest for one or a few rows, and leaves the other cores to the server
    (more threads gain about 10% from 256 rows on, measured on 2 cores; a server scales out
    with processes). `verify=True` checks a compiled preprocessor written at packaging against
    scikit-learn again (which it then imports). A missing, damaged or unloadable package raises
    ArtifactError.
    """
    folder = Path(folder)
    doc = read_mlmodel(folder)
    missing = missing_files(folder, doc)
    if missing:
        raise incomplete_error(folder, missing)
    if not native:
        return _load_pyfunc(folder, None)
    flavors: dict[str, Any] = doc["flavors"]
    try:
        if _is_inference_pipeline(flavors):
            return _load_pipeline(folder, doc, nthread, verify)
        if isinstance(flavors.get("xgboost"), dict):
            return _load_xgboost(folder, doc, nthread)
        if isinstance(flavors.get("sklearn"), dict):
            return _load_sklearn(folder, doc)
        raise _NotNative(f"no native predictor for the flavor(s) {', '.join(map(str, flavors))}")
    except _NotNative as exc:
        return _load_pyfunc(folder, str(exc))
    except ImportError as exc:  # xgboost or scikit-learn not installed
        from modelyard.registry.packaging import load_error

        raise load_error(folder, exc) from exc


def _load_pyfunc(folder: Path, reason: str | None) -> Predictor:
    from modelyard.registry.packaging import load_package

    return _PyfuncPredictor(folder, load_package(folder), reason)


def _is_inference_pipeline(flavors: Mapping[str, Any]) -> bool:
    conf = flavors.get("python_function")
    if not isinstance(conf, dict) or conf.get("loader_module") != _CODE_MODEL_LOADER:
        return False
    artifacts = conf.get("artifacts")
    wanted = {_PREPROCESSOR_ARTIFACT, _BOOSTER_ARTIFACT, _CONFIG_ARTIFACT}
    return isinstance(artifacts, dict) and wanted <= set(artifacts)


def _artifact_path(folder: Path, flavors: Mapping[str, Any], name: str) -> Path:
    entry = flavors["python_function"]["artifacts"][name]
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ArtifactError(
            f"the MLmodel file names no path for the artifact '{name}'",
            where=str(folder / "MLmodel"),
            hint="the package is damaged; materialize it again from the artifact store",
        )
    return folder / str(entry["path"])


def _load_pipeline(folder: Path, doc: Mapping[str, Any], nthread: int, verify: bool) -> Predictor:
    flavors = doc["flavors"]
    columns, numeric = _read_config(_artifact_path(folder, flavors, _CONFIG_ARTIFACT))
    preprocessor_path = _artifact_path(folder, flavors, _PREPROCESSOR_ARTIFACT)
    precompiled, unused = _precompiled_or_why_not(preprocessor_path, columns)
    if precompiled is not None and not verify:
        # checked against scikit-learn at packaging, and on its recorded features just now
        transform: _CompiledTransform | _SklearnTransform = precompiled.transform
        details = _transform_details(transform, None, precompiled.preprocessor)
        details |= {"compiled_from": PRECOMPILED_FILE, "verified": "packaging"}
        library = True  # `import xgboost` would import scikit-learn, scipy and pandas
    else:
        transform, details = _transform_at_load(
            folder, doc, preprocessor_path, columns, numeric, precompiled
        )
        library = False  # scikit-learn is loaded: xgboost itself costs little more
    booster_path = _artifact_path(folder, flavors, _BOOSTER_ARTIFACT)
    booster = _load_booster(booster_path, nthread, library=library)
    if isinstance(transform, _CompiledTransform) and transform.width != booster.num_features():
        raise ArtifactError(
            f"the preprocessor makes {transform.width} features but the booster expects "
            f"{booster.num_features()}: they do not come from the same training run",
            where=str(booster_path),
            hint="package the preprocessor and the model of one training run",
        )
    details |= {
        "precompiled_fallback": unused,
        "booster": "libxgboost" if isinstance(booster, _LibBooster) else "xgboost",
        "nthread": nthread,
    }
    return _PipelinePredictor(folder, columns, transform, booster, details)


def _transform_at_load(
    folder: Path,
    doc: Mapping[str, Any],
    preprocessor_path: Path,
    columns: list[str],
    numeric: list[str],
    precompiled: _Precompiled | None,
) -> tuple[_CompiledTransform | _SklearnTransform, dict[str, Any]]:
    """The preprocessor, compiled here (or as packaging compiled it) if the compiled transform
    makes what scikit-learn makes on the package's probe rows, else as it is."""
    preprocessor = _load_preprocessor(preprocessor_path)
    fallback = _SklearnTransform(preprocessor, tuple(columns), frozenset(numeric))
    transform: _CompiledTransform | _SklearnTransform = fallback
    try:
        compiled = precompiled.transform if precompiled else _compile(preprocessor, columns)
        reason = _verify(compiled, fallback, _probes(folder, doc, columns))
        if reason is None:
            transform = compiled
    except _Unsupported as exc:
        reason = str(exc)
    details = _transform_details(transform, reason, type(preprocessor).__name__)
    if reason is None:
        source = PRECOMPILED_FILE if precompiled else preprocessor_path.name
        details |= {"compiled_from": source, "verified": "load"}
    return transform, details


def _transform_details(
    transform: _CompiledTransform | _SklearnTransform, reason: str | None, preprocessor: str
) -> dict[str, Any]:
    compiled = transform if isinstance(transform, _CompiledTransform) else None
    return {
        "transform": "scikit-learn" if compiled is None else "compiled",
        "fallback": reason,
        "features": None if compiled is None else compiled.width,
        "steps": None if compiled is None else compiled.describe(),
        "preprocessor": preprocessor,
        "compiled_from": None,
        "verified": None,
    }


def _read_config(path: Path) -> tuple[list[str], list[str]]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
        if config.get("format") != _CONFIG_FORMAT:  # another version of the pipeline code
            raise _NotNative(f"pipeline config format {config.get('format')!r} is not known")
        columns = [str(c) for c in config["columns"]]
        numeric = [str(c) for c in config["numeric_columns"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"invalid pipeline config: {exc}",
            where=str(path),
            hint="the package is damaged; materialize it again from the artifact store",
        ) from exc
    return columns, numeric


def _load_preprocessor(path: Path) -> Any:
    import joblib  # type: ignore[import-untyped]

    try:
        preprocessor = joblib.load(path)
    except Exception as exc:  # unpickling raises anything: EOFError, KeyError, ImportError...
        raise ArtifactError(
            f"cannot load the preprocessor: {type(exc).__name__}: {exc}",
            where=str(path),
            hint="the package is damaged or needs other library versions (see its "
            "requirements.txt); materialize it again, or package the model again",
        ) from exc
    if not callable(getattr(preprocessor, "transform", None)):
        raise ArtifactError(
            f"the preprocessor file holds a {type(preprocessor).__name__}, not a fitted "
            "transformer",
            where=str(path),
            hint="package the preprocessor.joblib written by the training pipeline",
        )
    return preprocessor


def _load_booster(path: Path, nthread: int, *, library: bool = False) -> Any:
    """xgboost.Booster, or with `library` _LibBooster where XGBoost's library is found."""
    lib = _xgboost_library() if library else None
    if lib is not None:
        try:
            return _LibBooster(lib, path, nthread)
        except _XGBoostError as exc:
            raise _booster_load_error(path, exc) from exc
    import xgboost

    try:
        booster = xgboost.Booster(model_file=str(path))
    except xgboost.core.XGBoostError as exc:
        raise _booster_load_error(path, exc) from exc
    booster.set_param({"nthread": nthread})
    return booster


def _booster_load_error(path: Path, exc: Exception) -> ArtifactError:
    first = (str(exc).strip().splitlines() or [""])[0]
    return ArtifactError(
        f"cannot load the XGBoost model: {first}",
        where=str(path),
        hint="the package is damaged; materialize it again from the artifact store",
    )


class _XGBoostError(RuntimeError):
    """XGBoost's library failed (the message is its own)."""


@cache
def _xgboost_library() -> ctypes.CDLL | None:
    """XGBoost's shared library, loaded as the xgboost package loads it but without importing
    that package; None where it is not in the package's lib folder (then xgboost is imported)."""
    spec = importlib.util.find_spec("xgboost")
    name = {"darwin": "libxgboost.dylib", "win32": "xgboost.dll"}.get(sys.platform, "libxgboost.so")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "lib" / name
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
            lib.XGBGetLastError.restype = ctypes.c_char_p
            major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            lib.XGBoostVersion(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
        except (OSError, AttributeError):  # a dependency missing (OpenMP), an odd build
            return None
        return lib if major.value >= 2 else None  # the C API _LibBooster calls, as of 2.0
    return None


class _LibBooster:
    """An XGBoost model through XGBoost's C API: the calls xgboost.Booster(model_file=...) and
    its inplace_predict on a numpy matrix make, so it predicts exactly what they predict."""

    def __init__(self, lib: ctypes.CDLL, path: Path, nthread: int) -> None:
        self._lib = lib
        self._handle = ctypes.c_void_p()
        self._call("XGBoosterCreate", None, ctypes.c_uint64(0), ctypes.byref(self._handle))
        weakref.finalize(self, lib.XGBoosterFree, self._handle)
        self._call("XGBoosterLoadModel", self._handle, str(path).encode("utf-8"))
        for key, value in {"validate_parameters": "True", "nthread": str(nthread)}.items():
            self._call("XGBoosterSetParam", self._handle, key.encode(), value.encode())
        # inplace_predict's defaults: values (no margin), all trees, NaN is missing
        config = {
            "type": 0,
            "training": False,
            "iteration_begin": 0,
            "iteration_end": 0,
            "missing": math.nan,
            "strict_shape": False,
            "cache_id": 0,
        }
        self._config = json.dumps(config).encode()  # NaN as XGBoost's own JSON reader takes it

    def _call(self, function: str, *args: Any) -> None:
        if getattr(self._lib, function)(*args) != 0:
            raise _XGBoostError(self._lib.XGBGetLastError().decode("utf-8", "replace"))

    def num_features(self) -> int:
        count = ctypes.c_uint64()
        self._call("XGBoosterGetNumFeature", self._handle, ctypes.byref(count))
        return int(count.value)

    def inplace_predict(
        self, data: Floats, validate_features: bool = False
    ) -> npt.NDArray[np.float32]:
        """Predictions for a float64 matrix (any strides), as xgboost.Booster.inplace_predict."""
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        result = ctypes.POINTER(ctypes.c_float)()
        interface = json.dumps(data.__array_interface__).encode()
        self._call(
            "XGBoosterPredictFromDense",
            self._handle,
            interface,
            self._config,
            None,  # no proxy DMatrix (no base margin)
            ctypes.byref(shape),
            ctypes.byref(dims),
            ctypes.byref(result),
        )
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        size = math.prod(out_shape)
        if size == 0:
            empty = out_shape if result else (0,)  # as xgboost makes it: no buffer is (0,)
            return np.zeros(empty, dtype=np.float32)
        # a copy: the library reuses its buffer for this thread's next prediction
        return np.ctypeslib.as_array(result, shape=(size,)).reshape(out_shape).copy()


def _probes(folder: Path, doc: Mapping[str, Any], columns: list[str]) -> list[dict[str, list[Any]]]:
    """Rows to check the compiled transform against scikit-learn's: the package's input example
    and a row of missing values."""
    probes = [{name: [None] for name in columns}]
    example = _input_example(folder, doc)
    if example is not None and all(name in example for name in columns):
        probes.insert(0, example)
    return probes


def _input_example(folder: Path, doc: Mapping[str, Any]) -> dict[str, list[Any]] | None:
    info = doc.get("saved_input_example_info")
    if not isinstance(info, dict) or info.get("type") != "dataframe":
        return None
    try:
        data = json.loads((folder / str(info["artifact_path"])).read_text(encoding="utf-8"))
        if info.get("pandas_orient", "split") == "split":
            names, rows = data["columns"], data["data"]
            return {str(n): [row[i] for row in rows] for i, n in enumerate(names)}
        if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            return {str(n): [r.get(n) for r in data] for n in data[0]}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass  # the example is only a check; the package may lack it
    return None


# Rows to transform, as column lists, with the features expected for them.
_Check = tuple[dict[str, list[Any]], Floats]


def _verify(
    compiled: _CompiledTransform, reference: _SklearnTransform, probes: list[dict[str, list[Any]]]
) -> str | None:
    """Why the compiled transform cannot be trusted, or None when it makes what scikit-learn
    makes on the probes (a guard against scikit-learn versions that transform differently)."""
    return _compare(compiled, _expected_features(reference, probes), "scikit-learn's")


def _expected_features(
    reference: _SklearnTransform, probes: list[dict[str, list[Any]]]
) -> list[_Check]:
    """scikit-learn's features for the probes it transforms."""
    checks = []
    for probe in probes:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                checks.append((probe, reference(probe, _rows(probe))))
        except (ValueError, TypeError):
            continue  # e.g. a missing value where the encoder refuses unknown categories
    return checks


def _compare(compiled: _CompiledTransform, checks: list[_Check], source: str) -> str | None:
    for probe, expected in checks:
        try:
            got = compiled(probe, _rows(probe))
        except PredictError as exc:
            return f"the compiled transform refuses rows that {source} transform takes: {exc}"
        same = got.shape == expected.shape and np.allclose(
            got, expected, rtol=1e-12, atol=1e-12, equal_nan=True
        )
        if not same:
            return f"the compiled transform differs from {source} transform on the input example"
    return None


def _rows(columns: Columns) -> int:
    return len(next(iter(columns.values())))


# -- the precompiled file: the compiled preprocessor as packaging checked it --------------------


@dataclass(frozen=True)
class _Precompiled:
    transform: _CompiledTransform
    preprocessor: str  # its class name, for describe()


class _Unusable(Exception):
    """The precompiled file cannot be used (the message says why)."""


def write_compiled_preprocessor(package: Path, preprocessor: Any) -> str | None:
    """Write PRECOMPILED_FILE beside the preprocessor of the inference-pipeline package in
    `package` (`preprocessor` is its preprocessor, loaded), when it compiles and the compiled
    transform makes what scikit-learn makes on the package's input example and a row of missing
    values: the check load_predictor makes otherwise. None when written, else why not."""
    doc = read_mlmodel(package)
    flavors = doc["flavors"]
    columns, numeric = _read_config(_artifact_path(package, flavors, _CONFIG_ARTIFACT))
    preprocessor_path = _artifact_path(package, flavors, _PREPROCESSOR_ARTIFACT)
    target = _precompiled_path(preprocessor_path)
    if target.exists():  # an artifact of that very name: leave it alone
        return f"the package already has a file {target.name}"
    reference = _SklearnTransform(preprocessor, tuple(columns), frozenset(numeric))
    try:
        compiled = _compile(preprocessor, columns)
    except _Unsupported as exc:
        return str(exc)
    checks = _expected_features(reference, _probes(package, doc, columns))
    reason = _compare(compiled, checks, "scikit-learn's")
    if reason is not None:
        return reason
    try:
        text = json.dumps(
            _precompiled_json(compiled, preprocessor, preprocessor_path, checks),
            indent=1,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:  # a category of a type JSON cannot hold
        return f"the compiled transform has no JSON form: {exc}"
    target.write_text(text + "\n", encoding="utf-8")
    return None


def _precompiled_path(preprocessor_path: Path) -> Path:
    return preprocessor_path.with_name(PRECOMPILED_FILE)


def _precompiled_json(
    compiled: _CompiledTransform, preprocessor: Any, path: Path, checks: list[_Check]
) -> dict[str, Any]:
    import sklearn

    return {
        "format": _PRECOMPILED_FORMAT,
        # the file it was compiled from: serving uses this one with that file only
        "preprocessor_sha256": _sha256(path),
        "preprocessor": type(preprocessor).__name__,
        "compiled_with": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
        "transform": compiled.to_json(),
        # scikit-learn's features for the probe rows, which serving checks again with numpy
        "checks": [
            {
                "columns": {
                    name: [_value_json(v) for v in values] for name, values in probe.items()
                },
                "features": _floats_json(expected),
            }
            for probe, expected in checks
        ],
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _precompiled_or_why_not(
    preprocessor_path: Path, columns: Sequence[str]
) -> tuple[_Precompiled | None, str | None]:
    """The package's precompiled transform if it can be used instead of the preprocessor, else
    None and why not."""
    try:
        return _read_precompiled(preprocessor_path, columns), None
    except _Unusable as exc:
        return None, str(exc)


def _read_precompiled(preprocessor_path: Path, columns: Sequence[str]) -> _Precompiled:
    path = _precompiled_path(preprocessor_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Unusable(
            f"the package has no {PRECOMPILED_FILE} (packaged before modelyard wrote one, or "
            "its preprocessor does not compile)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _Unusable(f"{PRECOMPILED_FILE} cannot be read: {exc}") from exc
    try:
        doc = json.loads(text, parse_constant=_not_plain_json)
        if _get(doc, "format", str) != _PRECOMPILED_FORMAT:
            raise _Unusable(
                f"{PRECOMPILED_FILE} has the format {doc['format']!r}; this modelyard reads "
                f"{_PRECOMPILED_FORMAT!r}"
            )
        recorded, actual = _get(doc, "preprocessor_sha256", str), _sha256(preprocessor_path)
        if recorded != actual:
            raise _Unusable(
                f"{PRECOMPILED_FILE} was compiled from another preprocessor (sha256 "
                f"{recorded[:12]}...; {preprocessor_path.name} has {actual[:12]}...)"
            )
        transform = _CompiledTransform.from_json(_get(doc, "transform", dict))
        checks = [_check_from_json(check) for check in _get(doc, "checks", list)]
        preprocessor = _get(doc, "preprocessor", str)
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise _Unusable(f"{PRECOMPILED_FILE} is unreadable: {exc}") from exc
    _check_precompiled(transform, checks, columns)
    return _Precompiled(transform, preprocessor)


def _not_plain_json(name: str) -> Any:
    raise ValueError(f"{name} is not plain JSON")


def _check_from_json(data: Any) -> _Check:
    columns = _get(data, "columns", dict)
    probe = {str(name): [_value(v) for v in _get(columns, name, list)] for name in columns}
    if not probe or len({len(values) for values in probe.values()}) != 1:
        raise ValueError("a check's columns must have one length")
    return probe, _floats(data.get("features"), ndim=2)


def _check_precompiled(
    transform: _CompiledTransform, checks: list[_Check], columns: Sequence[str]
) -> None:
    """The transform fits the pipeline's inputs and, with this numpy, still makes the features
    scikit-learn made at packaging (a damaged file, or numpy computing otherwise, shows here)."""
    inputs = {name for block in transform.blocks for name in block.inputs}
    if not inputs <= set(columns):
        unknown = sorted(inputs - set(columns))
        raise _Unusable(f"{PRECOMPILED_FILE} takes columns the pipeline has not: {unknown}")
    if any(not inputs <= set(probe) for probe, _ in checks):
        raise _Unusable(f"{PRECOMPILED_FILE} has checks without the columns it takes")
    try:
        reason = _compare(transform, checks, "the packaging-time scikit-learn")
    except (ValueError, TypeError, IndexError) as exc:  # the ops do not fit together
        reason = f"the compiled transform fails on its checks: {type(exc).__name__}: {exc}"
    if reason is not None:
        raise _Unusable(f"{PRECOMPILED_FILE}: {reason}")


def _signature_columns(folder: Path, doc: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """(name, MLflow type) of the signature's named column inputs, or None."""
    signature = parse_signature(folder, doc.get("signature"))
    inputs = (signature or {}).get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return None
    if not all(isinstance(s, dict) and "name" in s and s.get("type") != "tensor" for s in inputs):
        return None
    return [(str(spec["name"]), str(spec["type"])) for spec in inputs]


def _numeric_columns(
    signature: list[tuple[str, str]] | None, flavor: str
) -> list[tuple[str, np.dtype[Any]]]:
    if signature is None:
        raise _NotNative(f"the {flavor} package has no signature naming its input columns")
    others = [f"{name} ({kind})" for name, kind in signature if kind not in _NUMERIC_TYPES]
    if others:
        raise _NotNative(f"the {flavor} package has non-numeric inputs: {', '.join(others)}")
    return [(name, _NUMERIC_TYPES[kind]) for name, kind in signature]


def _load_xgboost(folder: Path, doc: Mapping[str, Any], nthread: int) -> Predictor:
    import xgboost

    conf = doc["flavors"]["xgboost"]
    class_name = str(conf.get("model_class", "xgboost.core.Booster"))
    module_name, _, attribute = class_name.rpartition(".")
    if not module_name.startswith("xgboost"):
        raise _NotNative(f"the xgboost model class {class_name} is not XGBoost's")
    path = folder / str(conf.get("data", "model.xgb"))
    try:
        model = getattr(importlib.import_module(module_name), attribute)()
        model.load_model(str(path))
    except (ImportError, AttributeError, xgboost.core.XGBoostError) as exc:
        raise ArtifactError(
            f"cannot load the XGBoost model ({class_name}): {str(exc).strip()[:300]}",
            where=str(path),
            hint="the package is damaged or needs other library versions (see its "
            "requirements.txt); materialize it again, or package the model again",
        ) from exc
    booster = model if isinstance(model, xgboost.Booster) else model.get_booster()
    booster.set_param({"nthread": nthread})
    if not isinstance(model, xgboost.Booster):
        model.set_params(n_jobs=nthread)
    if booster.feature_types is not None and any(t == "c" for t in booster.feature_types):
        raise _NotNative("the XGBoost model has categorical features")
    signature = _signature_columns(folder, doc)
    if signature is not None:
        _numeric_columns(signature, "xgboost")  # numbers only
    # the booster's own feature names fix the column order (its pyfunc validates them)
    names = list(booster.feature_names or [])
    if not names:
        names = [name for name, _ in _numeric_columns(signature, "xgboost")]
    elif signature is not None and set(names) != {name for name, _ in signature}:
        raise _NotNative("the XGBoost model's feature names are not the signature's inputs")
    if len(names) != booster.num_features():
        raise _NotNative(f"{len(names)} input columns for {booster.num_features()} features")
    details = {"model_class": class_name, "nthread": nthread}
    return _XGBoostPredictor(folder, model, names, details)


def _load_sklearn(folder: Path, doc: Mapping[str, Any]) -> Predictor:
    columns = _numeric_columns(_signature_columns(folder, doc), "sklearn")
    import mlflow.sklearn

    try:
        model = mlflow.sklearn.load_model(str(folder))
    except Exception as exc:  # unpickling, or skops refusing a type
        from modelyard.registry.packaging import load_error

        raise load_error(folder, exc) from exc
    predict_fn = str(doc["flavors"].get("python_function", {}).get("predict_fn") or "predict")
    method = getattr(model, predict_fn, None)
    if not callable(method):
        raise _NotNative(f"the model has no {predict_fn} method")
    fitted_on = getattr(model, "feature_names_in_", None)
    if fitted_on is not None and [str(c) for c in fitted_on] != [name for name, _ in columns]:
        raise _NotNative("the model's feature names are not the signature's inputs, in order")
    details = {"model_class": type(model).__name__, "predict_fn": predict_fn}
    mixed = len({dtype for _, dtype in columns}) > 1  # one matrix would change some types
    predictor = _SklearnPredictor(folder, method, columns, use_frame=mixed, details=details)
    if fitted_on is not None and not mixed:
        # scikit-learn checks a DataFrame's names slowly; a matrix does when it predicts alike
        example = _input_example(folder, doc) or {name: [0.0] for name, _ in columns}
        predictor.use_frame = not _predicts_alike_from_a_matrix(predictor, example)
    return predictor


def _predicts_alike_from_a_matrix(predictor: _SklearnPredictor, example: Columns) -> bool:
    rows = len(next(iter(example.values())))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor.use_frame = False
            from_matrix = predictor.predict(example, rows)
            predictor.use_frame = True
            from_frame = predictor.predict(example, rows)
    except Exception:  # e.g. a ColumnTransformer that selects columns by name
        return False
    if from_matrix.shape != from_frame.shape or from_matrix.dtype != from_frame.dtype:
        return False
    if from_frame.dtype.kind == "f":
        return bool(np.allclose(from_matrix, from_frame, rtol=1e-12, atol=0, equal_nan=True))
    return bool(np.array_equal(from_matrix, from_frame))
