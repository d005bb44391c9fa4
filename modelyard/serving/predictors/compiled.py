"""The compiled preprocessor: a fitted scikit-learn preprocessor as a few numpy operations per
block of columns, step by step as scikit-learn does them (`_compile` in `compiler` makes it).

`_CompiledTransform` turns the input columns into the booster's feature matrix with numpy
alone; its `to_json()` / `from_json()` are what packaging writes and serving reads (the JSON
helpers are in `compiled_json`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .base import _MISSING, Columns, Floats, PredictError, _category, _number_matrix
from .compiled_json import (
    _UFUNCS,
    _categories_json,
    _floats,
    _floats_json,
    _get,
    _ints,
    _lookup,
    _strings,
    _value,
    _value_json,
)

# The format of to_json(): the precompiled file's "transform".
_TRANSFORM_FORMAT: Final = "modelyard-compiled-transform/1"


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
