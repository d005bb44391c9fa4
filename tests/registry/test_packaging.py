"""Model packages in the MLflow format: the abalone inference pipeline of scenario S1.

The preprocessor and booster are made by the example's own step scripts on a slice of the
shipped data (a few boosting rounds), packaged once per module, and then loaded and checked:
in-process, through `load_package`, and in a fresh process that cannot import modelyard.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from modelyard.errors import ArtifactError, ConfigError, ModelyardError
from modelyard.registry import pyfunc_models
from modelyard.registry.packaging import (
    PackageInfo,
    inspect_package,
    load_package,
    package_flavor_model,
    package_inference_pipeline,
    pinned_requirement,
)
from modelyard.store.artifacts import ArtifactStore
from modelyard.testing.abalone import COLUMNS, Abalone, make_abalone

REPO = Path(__file__).resolve().parents[2]
SLICE_ROWS = 300

# MLflow's input-example code trips a pandas 3 deprecation warning; it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Operation with range is deprecated")


@pytest.fixture(scope="module")
def abalone(tmp_path_factory: pytest.TempPathFactory) -> Abalone:
    return make_abalone(tmp_path_factory.mktemp("abalone"), rows=SLICE_ROWS)


@pytest.fixture(scope="module")
def package(abalone: Abalone, tmp_path_factory: pytest.TempPathFactory) -> PackageInfo:
    return abalone.package(tmp_path_factory.mktemp("packages") / "abalone-1")


# -- (a) (b) predictions ---------------------------------------------------------------------


def test_mlflow_loads_the_package_and_predicts_like_preprocessor_then_booster(
    abalone: Abalone, package: PackageInfo
) -> None:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(package.path))
    predictions = np.asarray(model.predict(abalone.frame))

    assert predictions.shape == (len(abalone.frame),)
    assert np.allclose(predictions, abalone.expected())
    # rings of abalone: a trained model predicts plausible values, not zeros
    assert 3 < predictions.mean() < 20


def test_raw_rows_records_and_headerless_csv_predict_the_same(
    abalone: Abalone, package: PackageInfo
) -> None:
    expected = abalone.expected()
    model = load_package(package.path)

    assert model.input_names == COLUMNS
    # CSV lines' fields, as strings: numbers are parsed, sex stays a category
    assert np.allclose(model.predict(abalone.raw_rows), expected)
    assert np.allclose(model.predict(abalone.raw_rows[0]), expected[:1])  # one raw row
    records = abalone.frame.to_dict(orient="records")
    assert np.allclose(model.predict(records), expected)
    headerless = pd.DataFrame(abalone.raw_rows)  # columns 0..7, like read_csv(header=None)
    assert np.allclose(model.predict(headerless), expected)
    # columns in another order, plus an extra one, are matched by name
    shuffled = abalone.frame[COLUMNS[::-1]].assign(rings=1.0)
    assert np.allclose(model.predict(shuffled), expected)


def test_the_python_model_itself_accepts_raw_rows(abalone: Abalone, package: PackageInfo) -> None:
    # What runs when MLflow calls the model without a signature check: rows go straight in.
    pyfunc: Any = load_package(package.path).pyfunc
    python_model = pyfunc.unwrap_python_model()
    predictions = python_model.predict(None, abalone.raw_rows)
    assert np.allclose(predictions, abalone.expected())


def test_empty_fields_are_missing_values_the_preprocessor_imputes(
    abalone: Abalone, package: PackageInfo
) -> None:
    row = list(abalone.raw_rows[0])
    row[0], row[3] = "", " "  # sex and height missing
    imputed = abalone.frame.head(1).astype({"sex": object})
    imputed.loc[:, ["sex", "height"]] = np.nan
    assert np.allclose(load_package(package.path).predict([row]), abalone.expected(imputed))


def test_bad_input_rows_are_config_errors_that_say_what_is_wrong(package: PackageInfo) -> None:
    model = load_package(package.path)
    with pytest.raises(ConfigError, match=r"row 1 has 7 values; expected 8: sex, length"):
        model.predict([["M", "0.4", "0.3", "0.1", "0.5", "0.2", "0.1"]])
    with pytest.raises(ConfigError, match=r"row 2: column 'length' is not a number: 'long'"):
        model.predict([["M", *["0.1"] * 7], ["F", "long", *["0.1"] * 6]])
    with pytest.raises(ConfigError, match=r"lacks the column\(s\) \['shell_weight'\]") as info:
        model.predict([{c: 0.1 for c in COLUMNS[:-1]}])
    assert info.value.where == str(package.path)
    assert info.value.http_status == 422


# -- (c) portability -------------------------------------------------------------------------

_FRESH_PROCESS = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoModelyard(importlib.abc.MetaPathFinder):
        # The package must load without modelyard: make any import of it fail.
        def find_spec(self, name, path=None, target=None):
            if name == "modelyard" or name.startswith("modelyard."):
                raise ModuleNotFoundError(f"blocked import of {name}", name=name)
            return None

    sys.meta_path.insert(0, NoModelyard())
    sys.path = [p for p in sys.path if p not in ("", ".", REPO)]

    import mlflow.pyfunc
    import pandas as pd

    request = json.load(sys.stdin)
    model = mlflow.pyfunc.load_model(request["path"])
    frame = pd.DataFrame(request["rows"], columns=request["columns"])
    predictions = model.predict(frame)
    assert not any(m == "modelyard" or m.startswith("modelyard.") for m in sys.modules)
    print(json.dumps([float(p) for p in predictions]))
    """
)


def test_package_loads_and_predicts_in_a_fresh_process_without_modelyard(
    abalone: Abalone, package: PackageInfo, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "model"  # and from another place than it was written to
    shutil.copytree(package.path, moved)
    request = {"path": str(moved), "columns": COLUMNS, "rows": abalone.frame.values.tolist()}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS.replace("REPO", repr(str(REPO)))],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    predictions = json.loads(done.stdout.strip().splitlines()[-1])
    assert np.allclose(predictions, abalone.expected())


def test_the_shipped_model_code_imports_nothing_from_modelyard() -> None:
    # MLflow runs a copy of this file inside each package: it must stand alone.
    tree = ast.parse(Path(pyfunc_models.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports do not work in a package's copy"
            roots.add((node.module or "").split(".")[0])
    allowed = {"__future__", "json", "math", "collections", "pathlib", "typing"}
    assert roots <= allowed | {"mlflow", "numpy", "pandas", "joblib", "xgboost"}, roots


# -- (d) what the package holds --------------------------------------------------------------


def test_mlmodel_has_the_named_signature_and_pinned_requirements(package: PackageInfo) -> None:
    mlmodel = yaml.safe_load((package.path / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [spec["name"] for spec in inputs] == COLUMNS
    assert [spec["type"] for spec in inputs] == ["string"] + ["double"] * 7
    assert mlmodel["metadata"] == {"model": "abalone", "version": 1}
    pyfunc = mlmodel["flavors"]["python_function"]
    # "models from code": the model's code is a file in the package, nothing is pickled
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert (package.path / Path(pyfunc["model_code_path"]).name).is_file()
    assert not list(package.path.rglob("*.pkl"))
    assert (package.path / "input_example.json").is_file()

    lines = (package.path / "requirements.txt").read_text().split()
    for module in ("xgboost", "sklearn", "pandas", "numpy", "joblib"):
        pin = pinned_requirement(module)
        assert pin in lines
    assert any(line.startswith("xgboost") and "==" in line for line in lines)
    assert any(line.startswith("scikit-learn==") for line in lines)
    assert any(line.startswith("mlflow==") for line in lines)


def test_package_info_describes_the_folder_as_the_artifact_store_sees_it(
    package: PackageInfo, tmp_path: Path
) -> None:
    assert package.flavors == ("python_function",)
    assert package.input_names == COLUMNS
    assert package.signature is not None
    assert package.signature["outputs"][0]["type"] == "tensor"
    assert package.requirements == tuple((package.path / "requirements.txt").read_text().split())
    stored = ArtifactStore.open(tmp_path / "store").put_dir(package.path)
    assert (package.digest, package.size) == (stored.digest, stored.size)
    assert inspect_package(package.path) == package
    assert json.loads(json.dumps(package.to_json()))["digest"] == package.digest


def test_the_compiled_preprocessor_is_a_file_of_the_package_that_mlflow_leaves_alone(
    abalone: Abalone, package: PackageInfo, tmp_path: Path
) -> None:
    import hashlib

    import mlflow.pyfunc

    compiled = package.path / "artifacts" / "preprocessor.compiled.json"
    document = json.loads(compiled.read_text())
    preprocessor = (package.path / "artifacts" / "preprocessor.joblib").read_bytes()
    assert document["preprocessor_sha256"] == hashlib.sha256(preprocessor).hexdigest()
    # the pyfunc model's artifacts are those it loads, as before; MLflow loads and predicts
    mlmodel = yaml.safe_load((package.path / "MLmodel").read_text())
    assert sorted(mlmodel["flavors"]["python_function"]["artifacts"]) == [
        "booster",
        "pipeline",
        "preprocessor",
    ]
    model = mlflow.pyfunc.load_model(str(package.path))
    assert np.allclose(model.predict(abalone.frame), abalone.expected())
    # the file is part of the package's content, and so of its digest
    without = tmp_path / "without"
    shutil.copytree(package.path, without)
    (without / "artifacts" / compiled.name).unlink()
    assert inspect_package(without).digest != package.digest


def test_a_preprocessor_that_does_not_compile_is_packaged_without_the_compiled_file(
    abalone: Abalone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelyard.serving.predictors import precompiled
    from modelyard.serving.predictors.compiled import _Unsupported

    def unsupported(preprocessor: Any, columns: Any) -> Any:
        raise _Unsupported("a transformer the compiler does not know")

    # where write_compiled_preprocessor calls it
    monkeypatch.setattr(precompiled, "_compile", unsupported)
    info = abalone.package(tmp_path / "pkg")
    assert sorted(p.name for p in (info.path / "artifacts").iterdir()) == [
        "pipeline.json",
        "preprocessor.joblib",
        "xgboost-model.json",
    ]


def test_caller_requirements_are_added_and_replace_a_pin(abalone: Abalone, tmp_path: Path) -> None:
    info = package_inference_pipeline(
        tmp_path / "pkg",
        preprocessor=abalone.preprocessor,
        model=abalone.booster,
        input_example=abalone.frame.head(2).to_dict(orient="records"),
        column_names=None,  # from the example
        requirements=["xgboost>=2", "requests==2.32.3"],
    )
    assert "xgboost>=2" in info.requirements
    assert "requests==2.32.3" in info.requirements
    assert not any(r.startswith("xgboost") and "==" in r for r in info.requirements)
    assert info.input_names == COLUMNS


# -- (e) errors ------------------------------------------------------------------------------


def _assert_clear(error: ModelyardError, where: Path) -> None:
    """A user-facing error: it says where, and how to fix it, in the one printed text."""
    assert error.where == str(where)
    assert error.hint
    assert str(error).startswith(f"{where}: ")
    assert "\n  fix: " in str(error)


def test_a_missing_preprocessor_file_is_an_artifact_error(abalone: Abalone, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "preprocessor.joblib"
    with pytest.raises(ArtifactError, match="the preprocessor file does not exist") as info:
        package_inference_pipeline(
            tmp_path / "pkg",
            preprocessor=missing,
            model=abalone.booster,
            input_example=abalone.frame.head(2),
            column_names=COLUMNS,
        )
    _assert_clear(info.value, missing)
    assert "preprocessor.joblib" in (info.value.hint or "")
    assert not (tmp_path / "pkg").exists()


def test_a_corrupt_preprocessor_fails_packaging_and_leaves_nothing(
    abalone: Abalone, tmp_path: Path
) -> None:
    corrupt = tmp_path / "preprocessor.joblib"
    corrupt.write_bytes(abalone.preprocessor.read_bytes()[:100])  # truncated
    out = tmp_path / "out"
    with pytest.raises(ArtifactError, match="cannot load the preprocessor from") as info:
        package_inference_pipeline(
            out / "pkg",
            preprocessor=corrupt,
            model=abalone.booster,
            input_example=abalone.frame.head(2),
            column_names=COLUMNS,
        )
    _assert_clear(info.value, corrupt)
    assert not out.exists() or not list(out.iterdir())


def test_a_booster_from_another_run_is_refused(abalone: Abalone, tmp_path: Path) -> None:
    import xgboost

    other = tmp_path / "other.json"
    rng = np.random.default_rng(0)
    data = xgboost.DMatrix(rng.normal(size=(20, 3)), label=rng.normal(size=20))
    xgboost.train({"nthread": 1}, data, num_boost_round=1).save_model(str(other))
    with pytest.raises(ArtifactError, match="makes 10 features but the booster expects 3"):
        package_inference_pipeline(
            tmp_path / "pkg",
            preprocessor=abalone.preprocessor,
            model=other,
            input_example=abalone.frame.head(2),
            column_names=COLUMNS,
        )


def test_packaging_into_a_used_folder_is_refused(abalone: Abalone, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "MLmodel").write_text("keep me")
    with pytest.raises(ArtifactError, match="not an empty folder") as info:
        package_inference_pipeline(
            used,
            preprocessor=abalone.preprocessor,
            model=abalone.booster,
            input_example=None,
            column_names=COLUMNS,
        )
    _assert_clear(info.value, used)
    assert (used / "MLmodel").read_text() == "keep me"


def test_columns_the_preprocessor_needs_must_be_given(abalone: Abalone, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs the column\(s\) \['shell_weight'\]"):
        package_inference_pipeline(
            tmp_path / "pkg",
            preprocessor=abalone.preprocessor,
            model=abalone.booster,
            input_example=None,
            column_names=COLUMNS[:-1],
        )


def test_a_corrupt_preprocessor_in_a_package_fails_loading_clearly(package_copy: Path) -> None:
    (package_copy / "artifacts" / "preprocessor.joblib").write_bytes(b"not a joblib file")
    with pytest.raises(ArtifactError, match="cannot load the preprocessor from") as info:
        load_package(package_copy)
    _assert_clear(info.value, package_copy)
    assert "materialize it again" in (info.value.hint or "")


def test_a_missing_file_in_a_package_is_named(package_copy: Path) -> None:
    (package_copy / "artifacts" / "xgboost-model.json").unlink()
    with pytest.raises(ArtifactError, match=r"incomplete: artifacts/xgboost-model.json missing"):
        load_package(package_copy)
    with pytest.raises(ArtifactError, match="incomplete"):
        inspect_package(package_copy)


def test_a_folder_without_mlmodel_is_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no MLmodel file") as info:
        load_package(tmp_path)
    _assert_clear(info.value, tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_package(tmp_path / "absent")


def test_a_missing_library_at_load_time_says_to_install_the_requirements(
    package_copy: Path,
) -> None:
    code = package_copy / "pyfunc_models.py"
    text = code.read_text().replace("import mlflow.models\n", "import not_installed_lib\n", 1)
    code.write_text(text)
    with pytest.raises(ArtifactError) as info:
        load_package(package_copy)
    assert "pip install -r" in (info.value.hint or "")
    assert "requirements.txt" in (info.value.hint or "")
    assert "not_installed_lib" in info.value.message


# -- flavor models (scenarios S2, S3) --------------------------------------------------------


def _numbers(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])


def test_a_scikit_learn_estimator_is_packaged_in_the_sklearn_flavor(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    x = _numbers()
    estimator = LinearRegression().fit(x, x["a"] * 2 + x["b"])
    info = package_flavor_model(tmp_path / "lr", estimator, input_example=x.head(2))
    assert set(info.flavors) == {"python_function", "sklearn"}
    assert info.input_names == ["a", "b", "c"]
    assert pinned_requirement("sklearn") in info.requirements
    rows = x.head(5).values.tolist()
    assert np.allclose(load_package(info.path).predict(rows), estimator.predict(x.head(5)))


def test_an_xgboost_booster_is_packaged_in_the_xgboost_flavor(tmp_path: Path) -> None:
    import xgboost

    x = _numbers()
    booster = xgboost.train(
        {"nthread": 1}, xgboost.DMatrix(x.values, label=x["a"].values), num_boost_round=3
    )
    info = package_flavor_model(tmp_path / "xgb", booster, input_example=x.head(2))
    assert set(info.flavors) == {"python_function", "xgboost"}
    assert pinned_requirement("xgboost") in info.requirements
    expected = booster.predict(xgboost.DMatrix(x.head(5).values))
    assert np.allclose(load_package(info.path).predict(x.head(5)), expected)


def test_something_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot package a dict"):
        package_flavor_model(tmp_path / "x", {"not": "a model"}, input_example=None)


# -- (f) import cost -------------------------------------------------------------------------


def test_importing_packaging_does_not_import_mlflow() -> None:
    code = (
        "import json, sys\n"
        "import modelyard.registry.packaging\n"
        "heavy = ('mlflow', 'pandas', 'numpy', 'xgboost', 'sklearn', 'joblib')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []
