"""The precompiled file: the compiled preprocessor as packaging checked it.

Packaging writes `PRECOMPILED_FILE` beside the preprocessor (`write_compiled_preprocessor`),
checked against scikit-learn there; a package that has it, for the very preprocessor.joblib it
holds, loads with numpy alone: nothing is unpickled. The file records scikit-learn's features
for the probe rows, which serving checks again with numpy (`_read_precompiled`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from modelyard.registry.packaging import read_mlmodel

from .compiled import _CompiledTransform, _Unsupported
from .compiled_json import _floats, _floats_json, _get, _value, _value_json
from .compiler import _compile
from .package import _CONFIG_ARTIFACT, _PREPROCESSOR_ARTIFACT, _artifact_path, _read_config
from .sklearn_transform import _SklearnTransform
from .verification import _Check, _compare, _expected_features, _probes

# The compiled preprocessor, written by packaging beside the preprocessor's joblib file.
PRECOMPILED_FILE: Final = "preprocessor.compiled.json"
_PRECOMPILED_FORMAT: Final = "modelyard-compiled-preprocessor/1"  # the file


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
