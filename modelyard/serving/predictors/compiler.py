"""The compiler: a fitted scikit-learn preprocessor (a ColumnTransformer, a Pipeline, or one
transformer) as a `_CompiledTransform`, or `_Unsupported` naming the part it does not know.

It knows SimpleImputer, StandardScaler, MinMaxScaler and OneHotEncoder (exact types), in
Pipelines and in a ColumnTransformer with 'drop' and 'passthrough'. scikit-learn is imported
when a preprocessor is compiled, never when this module is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .base import _MISSING, Floats
from .compiled import (
    _Block,
    _CategoryStep,
    _Clip,
    _CompiledTransform,
    _Elementwise,
    _FillMissingCategory,
    _FillNaN,
    _KeepCategories,
    _KeepNumbers,
    _NumericStep,
    _OneHot,
    _Op,
    _Unsupported,
)


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
