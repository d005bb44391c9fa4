"""Loading: `load_predictor(folder)` picks the fastest predictor that gives the same predictions
as `mlflow.pyfunc.load_model(folder).predict(DataFrame)` (see `modelyard.serving.predictors`).

Load problems raise `ArtifactError`. mlflow, xgboost, scikit-learn and pandas are imported when
a package is loaded (if at all), never when this module is.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from modelyard.errors import ArtifactError

# Private helpers of the packaging module: one reading of MLmodel files for all of modelyard.
from modelyard.registry.packaging import (
    incomplete_error,
    missing_files,
    parse_signature,
    read_mlmodel,
)

from .base import Columns, Predictor
from .compiled import _CompiledTransform, _Unsupported
from .compiler import _compile
from .kinds import _PipelinePredictor, _PyfuncPredictor, _SklearnPredictor, _XGBoostPredictor
from .package import (
    _BOOSTER_ARTIFACT,
    _CONFIG_ARTIFACT,
    _PREPROCESSOR_ARTIFACT,
    _artifact_path,
    _input_example,
    _is_inference_pipeline,
    _NotNative,
    _read_config,
)
from .precompiled import PRECOMPILED_FILE, _Precompiled, _precompiled_or_why_not
from .sklearn_transform import _SklearnTransform
from .verification import _probes, _verify
from .xgboost_capi import _LibBooster, _xgboost_library, _XGBoostError

# MLflow signature types that the native flavor predictors take, as numpy dtypes.
_NUMERIC_TYPES: Final[dict[str, np.dtype[Any]]] = {
    "double": np.dtype(np.float64),
    "float": np.dtype(np.float32),
    "long": np.dtype(np.int64),
    "integer": np.dtype(np.int32),
    "boolean": np.dtype(np.bool_),
}


def load_predictor(
    folder: Path, *, native: bool = True, nthread: int = 1, verify: bool = False
) -> Predictor:
    """The predictor of the MLflow model package in `folder` (see modelyard.serving.predictors).

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
