"""Reading a model package for serving: the inference pipeline's artifacts and config (see
`modelyard/registry/pyfunc_models.py`), and the package's input example.

A package a native predictor cannot take raises `_NotNative` (then pyfunc predicts); a damaged
one raises `ArtifactError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from modelyard.errors import ArtifactError

# As in modelyard/registry/pyfunc_models.py, which imports mlflow: a test keeps them equal.
_CODE_MODEL_LOADER: Final = "mlflow.pyfunc.loaders.code_model"
_PREPROCESSOR_ARTIFACT: Final = "preprocessor"
_BOOSTER_ARTIFACT: Final = "booster"
_CONFIG_ARTIFACT: Final = "pipeline"
_CONFIG_FORMAT: Final = "modelyard-inference-pipeline/1"


class _NotNative(Exception):
    """The package has no native predictor (the message says why): use pyfunc."""


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
