"""The compiled transform as JSON: what packaging writes so that serving needs numpy alone.

Plain JSON only: NaN and infinities are the strings "nan", "inf" and "-inf", and values of
other types than JSON's are tagged objects. The readers raise ValueError, saying what else the
JSON holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import numpy as np

from .base import _MISSING, Floats

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
