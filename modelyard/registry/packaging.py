"""Model packages: model versions in the MLflow model format.

A package is a folder that `mlflow.pyfunc.load_model` loads: an `MLmodel` file (flavors, the
signature, metadata), the model's files, an input example, and `requirements.txt` pinned to the
library versions the package was made and checked with. The registry stores the folder as a dir
artifact; `PackageInfo.digest` is the digest it gets there.

- `package_inference_pipeline`: a fitted scikit-learn preprocessor followed by an XGBoost booster
  (scenario S1), so that a raw row goes in and a prediction comes out. Its code is
  `modelyard/registry/pyfunc_models.py`, shipped inside the package as MLflow "models from code":
  the package loads without modelyard installed and unpickles nothing but the preprocessor.
- `package_flavor_model`: a plain scikit-learn estimator or XGBoost model, in MLflow's own flavor.
- `inspect_package` describes a package from its files; `load_package` loads it for predictions.

`import mlflow` takes seconds, so this module imports it (and pandas, numpy, xgboost) only inside
the functions that need it: importing the registry stays fast for the CLI.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from modelyard.errors import ArtifactError, ConfigError, MissingDependency
from modelyard.store.artifacts import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.pyfunc import PyFuncModel

__all__ = [
    "LoadedModel",
    "PackageInfo",
    "incomplete_error",
    "inspect_package",
    "load_error",
    "load_package",
    "missing_files",
    "package_flavor_model",
    "package_inference_pipeline",
    "parse_signature",
    "pinned_requirement",
    "read_mlmodel",
]

MLMODEL_FILE = "MLmodel"
REQUIREMENTS_FILE = "requirements.txt"

# What the inference pipeline imports when it loads and predicts (import names).
_PIPELINE_MODULES = ("sklearn", "xgboost", "pandas", "numpy", "joblib")


# -- what a package is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageInfo:
    """A model package on disk, as read from its files.

    `signature` is MLflow's signature with its JSON strings parsed: `{"inputs": [{"name", "type",
    ...}], "outputs": [...], "params": ...}`, or None for a package without one. `size` is the sum
    of the files' sizes and `digest` the folder's content digest, both as the artifact store
    computes them for a dir artifact.
    """

    path: Path
    flavors: tuple[str, ...]
    signature: dict[str, Any] | None
    requirements: tuple[str, ...]
    size: int
    digest: str
    mlflow_version: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def input_names(self) -> list[str]:
        """The named inputs of the signature, in order (empty without a signature)."""
        inputs = (self.signature or {}).get("inputs") or []
        return [str(spec["name"]) for spec in inputs if isinstance(spec, dict) and "name" in spec]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "flavors": list(self.flavors),
            "signature": self.signature,
            "requirements": list(self.requirements),
            "size": self.size,
            "digest": self.digest,
            "mlflow_version": self.mlflow_version,
            "metadata": self.metadata,
        }


def inspect_package(path: str | Path) -> PackageInfo:
    """Describe the package at `path` from its `MLmodel` and `requirements.txt` (no mlflow)."""
    path = Path(path)
    doc = read_mlmodel(path)
    missing = missing_files(path, doc)
    if missing:
        raise incomplete_error(path, missing)
    ref = ArtifactStore(_DigestOnlyObjects()).put_dir(path)
    metadata = doc.get("metadata")
    return PackageInfo(
        path=path,
        flavors=tuple(str(name) for name in doc["flavors"]),
        signature=parse_signature(path, doc.get("signature")),
        requirements=tuple(_read_requirements(path / REQUIREMENTS_FILE)),
        size=ref.size,
        digest=ref.digest,
        mlflow_version=str(doc["mlflow_version"]) if doc.get("mlflow_version") else None,
        metadata=dict(metadata) if isinstance(metadata, dict) else None,
    )


def read_mlmodel(path: Path) -> dict[str, Any]:
    import yaml  # lazy: only reading a package needs it

    if not path.is_dir():
        raise ArtifactError(
            "model package folder does not exist" if not path.exists() else "is not a folder",
            where=str(path),
            hint="pass the folder that holds the package's MLmodel file",
        )
    mlmodel = path / MLMODEL_FILE
    try:
        doc = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(
            "not an MLflow model package: it has no MLmodel file",
            where=str(path),
            hint="pass a folder written by package_inference_pipeline or package_flavor_model",
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ArtifactError(
            f"the MLmodel file cannot be read: {exc}",
            where=str(mlmodel),
            hint="the package is damaged; materialize it again from the artifact store",
        ) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise ArtifactError(
            "the MLmodel file has no 'flavors' mapping",
            where=str(mlmodel),
            hint="the package is damaged; materialize it again from the artifact store",
        )
    return doc


def missing_files(path: Path, doc: Mapping[str, Any]) -> list[str]:
    """The files the pyfunc flavor names that are not in the package (relative paths)."""
    conf = doc["flavors"].get("python_function")
    if not isinstance(conf, dict):
        return []
    wanted: list[str] = []
    for artifact in (conf.get("artifacts") or {}).values():
        if isinstance(artifact, dict) and isinstance(artifact.get("path"), str):
            wanted.append(artifact["path"])
    if isinstance(conf.get("model_code_path"), str):  # MLflow loads it from the package root
        wanted.append(Path(conf["model_code_path"]).name)
    for key in ("model_path", "data"):
        if isinstance(conf.get(key), str):
            wanted.append(conf[key])
    return [rel for rel in wanted if not (path / rel).exists()]


def incomplete_error(path: Path, missing: list[str]) -> ArtifactError:
    return ArtifactError(
        f"the model package is incomplete: {', '.join(missing)} missing",
        where=str(path),
        hint="materialize the package again from the artifact store, or package the model again",
    )


def parse_signature(path: Path, raw: object) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ArtifactError(
            "the MLmodel signature is not a mapping",
            where=str(path / MLMODEL_FILE),
            hint="the package is damaged; materialize it again from the artifact store",
        )
    signature: dict[str, Any] = {}
    for key, value in raw.items():
        # MLflow stores inputs/outputs/params as JSON strings inside the YAML.
        try:
            signature[str(key)] = json.loads(value) if isinstance(value, str) else value
        except ValueError as exc:
            raise ArtifactError(
                f"the MLmodel signature's {key!r} is not valid JSON: {exc}",
                where=str(path / MLMODEL_FILE),
                hint="the package is damaged; materialize it again from the artifact store",
            ) from exc
    return signature


def _read_requirements(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class _DigestOnlyObjects:
    """An object store that keeps nothing and claims to hold every blob.

    `ArtifactStore.put_dir` skips uploading blobs that exist, so on top of this store it hashes the
    folder and builds its tree manifest exactly as storing it would (the same digest and size),
    without copying a byte.
    """

    @property
    def location(self) -> str:
        return "(digest only)"

    def exists(self, key: str) -> bool:
        return True

    def put_bytes(self, key: str, data: bytes) -> None:
        pass

    def put_file(self, key: str, path: Path) -> None:
        pass

    def delete(self, key: str) -> None:
        pass

    def _nothing(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(f"{key}: a digest-only store holds no content")

    def get_file(self, key: str, dest: Path) -> None:
        raise self._nothing(key)

    def read_bytes(self, key: str) -> bytes:
        raise self._nothing(key)

    def open_read(self, key: str) -> BinaryIO:
        raise self._nothing(key)

    def size(self, key: str) -> int:
        raise self._nothing(key)


# -- requirements -------------------------------------------------------------------------------

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _distributions_by_module() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def pinned_requirement(module: str) -> str:
    """`<distribution>==<installed version>` for an importable module (`sklearn` gives
    `scikit-learn==1.5.0`). The distribution is the one installed here, e.g. `xgboost-cpu` where
    that variant provides `xgboost`: the package records exactly what it was checked with."""
    candidates = sorted(_distributions_by_module().get(module, []))
    if not candidates:
        raise MissingDependency(module, "examples", f"packaging a model that uses {module}")
    # Several distributions may ship files into one import package; prefer the eponymous one.
    exact = [d for d in candidates if _canonical(d) == _canonical(module)]
    dist = (exact or candidates)[0]
    return f"{dist}=={importlib.metadata.version(dist)}"


def _requirements(modules: Sequence[str], extra: Sequence[str] | None) -> list[str]:
    """Pins for `modules`, then the caller's requirements; a caller's requirement for the same
    distribution replaces the pin (e.g. a looser `xgboost>=2`)."""
    reqs = {_key(p.split("==")[0]): p for p in map(pinned_requirement, modules)}
    for req in extra or ():
        match = _REQUIREMENT_NAME.match(req) if isinstance(req, str) else None
        if match is None:
            raise ConfigError(
                f"invalid requirement {req!r}",
                hint="give pip requirement strings such as 'xgboost==2.1.1' or 'pandas>=2'",
            )
        reqs[_key(match.group(1))] = req.strip()
    return list(reqs.values())


# Distributions that provide the same import package: a requirement for one replaces the other.
_VARIANTS = {"xgboost-cpu": "xgboost"}


def _key(distribution: str) -> str:
    name = _canonical(distribution)
    return _VARIANTS.get(name, name)


# -- writing packages ---------------------------------------------------------------------------


def package_inference_pipeline(
    dest: str | Path,
    *,
    preprocessor: str | Path,
    model: str | Path,
    input_example: pd.DataFrame | Sequence[Mapping[str, Any]] | None,
    column_names: Sequence[str] | None,
    requirements: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> PackageInfo:
    """Package a preprocessor (joblib) and an XGBoost booster (JSON/UBJ) as one pyfunc model.

    The model takes a DataFrame with the raw columns, records, or raw rows of values in the order
    of `column_names` (default: the input example's columns, else the columns the preprocessor
    was fit on), and returns one prediction per row. The signature is inferred from the input
    example and the pipeline's predictions on it; without an example the package has neither,
    and raw rows must then carry numbers as numbers (strings are parsed only in the columns that
    the example shows to be numeric).
    `requirements` are added to the pins of scikit-learn, xgboost, pandas, numpy and joblib (and
    MLflow's own). `dest` must not exist or be an empty folder; nothing is left there on failure.
    """
    dest = Path(dest)
    _check_dest(dest)
    preprocessor = _existing_file(preprocessor, "preprocessor", "preprocessor.joblib")
    model = _existing_file(model, "XGBoost model", "xgboost-model.json")
    metadata_dict = _check_metadata(metadata)
    if importlib.util.find_spec("xgboost") is None:
        raise MissingDependency("xgboost", "examples", "packaging an XGBoost inference pipeline")
    reqs = _requirements(_PIPELINE_MODULES, requirements)

    import mlflow.models
    import mlflow.pyfunc

    from modelyard.registry import pyfunc_models as code

    example = _example_frame(input_example)
    pipeline = _load_pipeline(code, preprocessor, model, column_names, example)
    signature = None
    if example is not None:
        example = example[pipeline.columns]
        # Raw rows (CSV values) are parsed as numbers in the columns that are numbers here.
        pipeline.numeric_columns = [c for c in pipeline.columns if _is_number_column(example[c])]
        predictions = _predict_example(code, pipeline, example, preprocessor)
        signature = mlflow.models.infer_signature(example, predictions)

    with tempfile.TemporaryDirectory(prefix="modelyard-package-") as scratch:
        config = Path(scratch) / f"{code.CONFIG_ARTIFACT}.json"
        config.write_text(
            json.dumps(
                {
                    "format": code.CONFIG_FORMAT,
                    "columns": pipeline.columns,
                    "numeric_columns": pipeline.numeric_columns,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )

        def save(tmp: Path) -> None:
            mlflow.pyfunc.save_model(
                path=str(tmp),
                python_model=str(Path(code.__file__)),  # "models from code": nothing pickled
                artifacts={
                    code.PREPROCESSOR_ARTIFACT: str(preprocessor),
                    code.BOOSTER_ARTIFACT: str(model),
                    code.CONFIG_ARTIFACT: str(config),
                },
                signature=signature,
                input_example=example,
                pip_requirements=reqs,
                metadata=metadata_dict,
            )
            # The preprocessor as numpy operations, checked against it, beside its joblib file:
            # `modelyard serve` then loads without scikit-learn. A preprocessor that does not
            # compile gets no such file (and is served as it is).
            from modelyard.serving.predictors import write_compiled_preprocessor

            write_compiled_preprocessor(tmp, pipeline.preprocessor)

        _write_atomically(dest, save)
    return inspect_package(dest)


def package_flavor_model(
    dest: str | Path,
    model: Any,
    *,
    input_example: pd.DataFrame | Sequence[Mapping[str, Any]] | None,
    requirements: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> PackageInfo:
    """Package a fitted scikit-learn estimator, or an XGBoost Booster / scikit-learn-API model,
    in MLflow's own flavor (`mlflow.sklearn` / `mlflow.xgboost`), with a signature inferred from
    the input example and the model's predictions on it, and pinned requirements."""
    dest = Path(dest)
    _check_dest(dest)
    metadata_dict = _check_metadata(metadata)
    flavor = _flavor_of(model)
    example = _example_frame(input_example)

    import mlflow.models
    import mlflow.sklearn
    import mlflow.xgboost

    # skops where MLflow has it (MLflow 3's safe default): loading the package unpickles nothing.
    sklearn_format = getattr(mlflow.sklearn, "SERIALIZATION_FORMAT_SKOPS", "cloudpickle")
    if flavor == "xgboost":
        modules = ["xgboost", "numpy", "pandas"]
    else:
        modules = ["sklearn", "numpy", "pandas", sklearn_format]
    reqs = _requirements(modules, requirements)

    signature = None
    if example is not None:
        predictions = _flavor_predict(model, example)
        signature = mlflow.models.infer_signature(example, predictions)
    common: dict[str, Any] = {
        "signature": signature,
        "input_example": example,
        "pip_requirements": reqs,
        "metadata": metadata_dict,
    }

    def save(tmp: Path) -> None:
        if flavor == "xgboost":
            mlflow.xgboost.save_model(model, str(tmp), **common)
        else:
            mlflow.sklearn.save_model(
                model, str(tmp), serialization_format=sklearn_format, **common
            )

    _write_atomically(dest, save)
    return inspect_package(dest)


def _flavor_predict(model: Any, example: pd.DataFrame) -> Any:
    try:
        if _is_booster(model):  # a bare Booster predicts from a DMatrix, as its pyfunc does
            import xgboost

            return model.predict(xgboost.DMatrix(example))
        return model.predict(example)
    except Exception as exc:  # the model's own error on the example
        raise ConfigError(
            f"the model cannot predict the input example: {type(exc).__name__}: {exc}",
            hint="give an input example with the columns and types the model was trained on",
        ) from exc


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise ArtifactError(
            "cannot write a model package here: the path exists and is not an empty folder",
            where=str(dest),
            hint="package into a new or empty folder (a package is never overwritten)",
        )


def _existing_file(path: str | Path, what: str, usual_name: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(
            f"the {what} file " + ("is a folder" if path.is_dir() else "does not exist"),
            where=str(path),
            hint=f"pass the {usual_name} file written by the training pipeline"
            + (f", e.g. {path / usual_name}" if path.is_dir() else ""),
        )
    return path.resolve()


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if metadata is None:
        return None
    try:
        # MLmodel is YAML, but keep metadata JSON-able: the registry and the HTTP API show it.
        return dict(json.loads(json.dumps(dict(metadata), allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model package metadata must be JSON-able: {exc}",
            hint="use str keys and str, number, bool, list, dict or None values",
        ) from exc


def _example_frame(
    example: pd.DataFrame | Sequence[Mapping[str, Any]] | None,
) -> pd.DataFrame | None:
    if example is None:
        return None
    import pandas as pd

    if isinstance(example, pd.DataFrame):
        frame = example.copy()
    elif isinstance(example, Sequence) and all(isinstance(r, Mapping) for r in example):
        frame = pd.DataFrame([dict(r) for r in example])
    else:
        raise ConfigError(
            f"the input example is a {type(example).__name__}",
            hint="pass a pandas DataFrame with named columns, or a list of records (dicts)",
        )
    if frame.empty:
        raise ConfigError("the input example has no rows", hint="give at least one row")
    for column in frame.columns:
        # JSON clients write 1 and 1.0 alike; MLflow's schema accepts ints for a double column
        # but refuses floats for a long one, so integer example columns are declared double.
        if _is_number_column(frame[column]) and pd.api.types.is_integer_dtype(frame[column]):
            frame[column] = frame[column].astype("float64")
    return frame


def _is_number_column(values: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values))


def _load_pipeline(
    code: Any,
    preprocessor: Path,
    model: Path,
    column_names: Sequence[str] | None,
    example: pd.DataFrame | None,
) -> Any:
    """Load the pipeline's files, settling its input columns; a bad file is an ArtifactError."""
    columns = list(column_names) if column_names is not None else None
    if columns is None and example is not None:
        columns = [str(c) for c in example.columns]
    if columns is not None and (not columns or len(set(columns)) != len(columns)):
        raise ConfigError(
            f"column_names must be distinct and not empty, got {columns}",
            hint="list the raw input columns in the order of a raw row",
        )
    try:
        pipeline = code.InferencePipeline.load(preprocessor, model, columns)
    except code.PipelineLoadError as exc:
        raise ArtifactError(
            str(exc),
            where=str(exc.path or preprocessor),
            hint="pass the files written by the training run, intact (re-run it if in doubt)",
        ) from exc
    fitted_on = getattr(pipeline.preprocessor, "feature_names_in_", None)
    if fitted_on is not None:
        lacking = [str(c) for c in fitted_on if str(c) not in pipeline.columns]
        if lacking:
            raise ConfigError(
                f"the preprocessor needs the column(s) {lacking}, which column_names / the input "
                f"example lack (they have {pipeline.columns})",
                hint=f"use the columns the preprocessor was fit on: {[str(c) for c in fitted_on]}",
            )
    if example is not None:
        absent = [c for c in pipeline.columns if c not in example.columns]
        if absent:
            raise ConfigError(
                f"the input example lacks the column(s) {absent}",
                hint=f"give an input example with the columns {pipeline.columns}",
            )
    return pipeline


def _predict_example(code: Any, pipeline: Any, example: pd.DataFrame, preprocessor: Path) -> Any:
    try:
        return pipeline.predict(example)
    except code.PipelineLoadError as exc:  # the preprocessor's and booster's shapes disagree
        raise ArtifactError(
            str(exc),
            where=str(preprocessor),
            hint="package the preprocessor and the model of one training run",
        ) from exc
    except code.PipelineInputError as exc:
        raise ConfigError(f"invalid input example: {exc}", hint="fix the input example") from exc
    except Exception as exc:  # the preprocessor or booster rejected the example
        raise ConfigError(
            f"the pipeline cannot predict the input example: {type(exc).__name__}: {exc}",
            hint="give an input example with the raw columns and types the preprocessor was fit on",
        ) from exc


def _flavor_of(model: Any) -> str:
    if importlib.util.find_spec("xgboost") is not None:
        import xgboost

        if isinstance(model, xgboost.Booster | xgboost.XGBModel):
            return "xgboost"
    from sklearn.base import BaseEstimator  # scikit-learn comes with mlflow

    if isinstance(model, BaseEstimator):
        return "sklearn"
    raise ConfigError(
        f"cannot package a {type(model).__name__} as a flavor model",
        hint="pass a fitted scikit-learn estimator or an XGBoost Booster / XGBModel; for a "
        "preprocessor + booster use package_inference_pipeline",
    )


def _is_booster(model: Any) -> bool:
    if importlib.util.find_spec("xgboost") is None:
        return False
    import xgboost

    return isinstance(model, xgboost.Booster)


def _write_atomically(dest: Path, save: Any) -> None:
    """Run `save(tmp)` on a fresh sibling of `dest`, then move it into place in one rename, so a
    failed packaging leaves no half-written package behind."""
    from mlflow.exceptions import MlflowException

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        try:
            save(tmp)
        except MlflowException as exc:
            raise ArtifactError(
                f"MLflow cannot write the model package: {exc.message}",
                where=str(dest),
                hint="check the model, the input example and the requirements given",
            ) from exc
        except OSError as exc:
            raise ArtifactError(
                f"cannot write the model package: {exc.strerror or exc}",
                where=str(exc.filename or dest),
                hint="check the free space and the permissions of the destination's folder",
            ) from exc
        if dest.exists():
            dest.rmdir()  # checked empty above; a rename cannot replace a folder everywhere
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- loading packages ---------------------------------------------------------------------------


class LoadedModel:
    """A loaded package: `predict` takes a DataFrame, records, or raw rows.

    MLflow's own `predict` needs named columns when the signature names them; raw rows (a CSV
    line's values, in signature order) are converted here first, with numeric inputs parsed from
    strings. `pyfunc` is MLflow's model, for everything else.
    """

    def __init__(self, path: Path, pyfunc: PyFuncModel) -> None:
        from mlflow.types import DataType

        self.path = path
        self.pyfunc = pyfunc
        self.input_names: list[str] | None = None
        self.numeric_inputs: list[str] = []
        mlmodel: Any = pyfunc.metadata  # mlflow.models.Model, whose methods are untyped
        schema = mlmodel.get_input_schema()
        if schema is not None and not schema.is_tensor_spec() and schema.has_input_names():
            numeric = {DataType.double, DataType.float, DataType.long, DataType.integer}
            self.input_names = [str(name) for name in schema.input_names()]
            self.numeric_inputs = [
                str(spec.name) for spec in schema.inputs if getattr(spec, "type", None) in numeric
            ]

    def __repr__(self) -> str:
        return f"LoadedModel({str(self.path)!r})"

    def predict(self, data: Any) -> Any:
        """The model's predictions; bad input raises ConfigError (HTTP 422)."""
        from mlflow.exceptions import MlflowException

        if self.input_names is not None:
            from modelyard.registry.pyfunc_models import PipelineInputError, to_frame

            try:
                data = to_frame(data, self.input_names, self.numeric_inputs)
            except PipelineInputError as exc:
                raise ConfigError(
                    f"invalid model input: {exc}",
                    where=str(self.path),
                    hint=f"send rows of the inputs {self.input_names}, or records with them",
                ) from None
        try:
            return self.pyfunc.predict(data)
        except MlflowException as exc:  # MLflow's schema check
            raise ConfigError(
                f"invalid model input: {exc.message}",
                where=str(self.path),
                hint="send the inputs and types of the package's signature (see its MLmodel)",
            ) from None


def load_package(path: str | Path) -> LoadedModel:
    """Load the package at `path` with `mlflow.pyfunc.load_model`; a missing, damaged or
    unloadable package raises ArtifactError saying which file and what to do."""
    path = Path(path)
    doc = read_mlmodel(path)
    missing = missing_files(path, doc)
    if missing:
        raise incomplete_error(path, missing)
    import mlflow.pyfunc

    try:
        pyfunc = mlflow.pyfunc.load_model(str(path))
    except Exception as exc:  # a model's load code can raise anything
        raise load_error(path, exc) from exc
    return LoadedModel(path, pyfunc)


def load_error(path: Path, exc: BaseException) -> ArtifactError:
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    # The innermost error names the bad file best (e.g. "cannot load the preprocessor from ...").
    root = chain[-1]
    # By name: the package runs its own copy of pyfunc_models, whose classes are not ours.
    named = next((e for e in chain if type(e).__name__ == "PipelineLoadError"), root)
    reason = str(getattr(named, "message", None) or named).strip().splitlines()
    text = reason[0] if reason else type(named).__name__
    if any(isinstance(e, ImportError) for e in chain):
        hint = f"install the package's requirements: pip install -r {path / REQUIREMENTS_FILE}"
    else:
        hint = (
            "the package is damaged, or needs other library versions (see its requirements.txt); "
            "materialize it again from the artifact store, or package the model again"
        )
    return ArtifactError(f"cannot load the model package: {text}", where=str(path), hint=hint)
