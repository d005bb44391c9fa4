"""Verification against scikit-learn: the compiled transform is used only where it makes what
scikit-learn makes, on the package's input example and a row of missing values (a guard against
scikit-learn versions that transform differently).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .base import Columns, Floats, PredictError
from .compiled import _CompiledTransform
from .package import _input_example
from .sklearn_transform import _SklearnTransform


def _probes(folder: Path, doc: Mapping[str, Any], columns: list[str]) -> list[dict[str, list[Any]]]:
    """Rows to check the compiled transform against scikit-learn's: the package's input example
    and a row of missing values."""
    probes = [{name: [None] for name in columns}]
    example = _input_example(folder, doc)
    if example is not None and all(name in example for name in columns):
        probes.insert(0, example)
    return probes


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
