"""Predictors: model packages loaded for serving predict exactly like `mlflow.pyfunc`.

The abalone pipeline is made as in tests/registry/test_packaging.py: the example's own step
scripts on a slice of the shipped data, packaged once per module. Other preprocessors are fitted
here on a small synthetic frame, to compare the compiled transform with scikit-learn's for each
transformer the compiler knows, and the fallback for one it does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import ArtifactError
from modelyard.registry.packaging import PackageInfo, package_inference_pipeline
from modelyard.serving.predictors import (
    PRECOMPILED_FILE,
    PredictError,
    Predictor,
    load_predictor,
    loading,
)
from modelyard.serving.predictors.base import _MISSING
from modelyard.serving.predictors.compiled import (
    _Block,
    _CompiledTransform,
    _Elementwise,
    _OneHot,
    _Unsupported,
)
from modelyard.serving.predictors.compiled_json import _floats, _floats_json, _value, _value_json
from modelyard.serving.predictors.compiler import _compile
from modelyard.serving.predictors.package import (
    _BOOSTER_ARTIFACT,
    _CONFIG_ARTIFACT,
    _CONFIG_FORMAT,
    _PREPROCESSOR_ARTIFACT,
)
from modelyard.serving.predictors.xgboost_capi import _LibBooster, _xgboost_library, _XGBoostError
from modelyard.testing.abalone import COLUMNS, Abalone, make_abalone, read_rows

SLICE_ROWS = 300

# MLflow's input-example code trips a pandas 3 deprecation warning; it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Operation with range is deprecated")


def columns_of(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """The column lists a server hands to a predictor."""
    return {str(name): frame[name].tolist() for name in frame.columns}


def assert_predicts_like(predictor: Predictor, model: Any, frame: pd.DataFrame) -> np.ndarray:
    got = predictor.predict(columns_of(frame), len(frame))
    expected = np.asarray(model.predict(frame))
    assert got.shape == expected.shape
    if expected.dtype.kind == "f":
        assert got.dtype == np.float64
        assert np.allclose(got, expected, rtol=1e-6, atol=0)
    else:
        assert np.array_equal(got, expected)
    return got


# -- the abalone pipeline ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def abalone(tmp_path_factory: pytest.TempPathFactory) -> Abalone:
    return make_abalone(tmp_path_factory.mktemp("abalone"), rows=SLICE_ROWS)


@pytest.fixture(scope="module")
def package(abalone: Abalone, tmp_path_factory: pytest.TempPathFactory) -> PackageInfo:
    return abalone.package(tmp_path_factory.mktemp("packages") / "abalone-1")


@pytest.fixture(scope="module")
def pyfunc(package: PackageInfo) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(package.path))


@pytest.fixture(scope="module")
def predictor(package: PackageInfo) -> Predictor:
    return load_predictor(package.path)


def test_the_pipeline_package_is_served_natively_with_a_compiled_preprocessor(
    predictor: Predictor,
) -> None:
    assert predictor.kind == "native:inference-pipeline"
    assert predictor.columns == tuple(COLUMNS)
    described = predictor.describe()
    assert described["transform"] == "compiled"
    assert described["fallback"] is None
    assert described["features"] == 10
    assert described["nthread"] == 1
    assert [step.split(":")[0] for step in described["steps"]] == ["numeric", "categorical"]
    assert json.loads(json.dumps(described)) == described


def test_it_predicts_the_test_rows_like_pyfunc(
    predictor: Predictor, pyfunc: Any, abalone: Abalone
) -> None:
    got = assert_predicts_like(predictor, pyfunc, abalone.frame)
    assert 3 < got.mean() < 20  # rings: a trained model, not zeros


def test_one_row_and_a_thousand_rows_predict_like_pyfunc(predictor: Predictor, pyfunc: Any) -> None:
    rows = read_rows(SLICE_ROWS, SLICE_ROWS + 1000)  # rows the model never saw
    assert len(rows) == 1000
    assert_predicts_like(predictor, pyfunc, rows)
    for i in (0, 1, 999):
        assert_predicts_like(predictor, pyfunc, rows.iloc[[i]].reset_index(drop=True))


def test_missing_values_are_imputed_like_pyfunc(
    predictor: Predictor, pyfunc: Any, abalone: Abalone
) -> None:
    frame = abalone.frame.head(6).copy()
    frame.loc[0, "length"] = None  # None and NaN in numeric columns
    frame.loc[1, "height"] = np.nan
    frame.loc[2, ["diameter", "shell_weight"]] = np.nan
    frame.loc[3, "sex"] = None
    frame.loc[4, "sex"] = np.nan
    frame.loc[5, COLUMNS[1:]] = np.nan
    got = assert_predicts_like(predictor, pyfunc, frame)
    assert not np.isnan(got).any()
    # a missing value in a column list is None (JSON null), whatever the other rows hold
    columns = columns_of(frame)
    columns["length"][0] = None
    assert np.allclose(predictor.predict(columns, 6), got, rtol=1e-6)


def test_an_unseen_category_is_ignored_like_pyfunc(
    predictor: Predictor, pyfunc: Any, abalone: Abalone
) -> None:
    frame = abalone.frame.head(3).copy()
    frame["sex"] = ["U", "M", "unknown"]
    assert_predicts_like(predictor, pyfunc, frame)


def test_raw_csv_values_are_read_as_the_packages_to_frame_reads_them(
    predictor: Predictor, package: PackageInfo
) -> None:
    from modelyard.registry.packaging import load_package

    # load_package parses raw rows with the pipeline's to_frame before MLflow predicts
    rows = [
        ["M", "0.455", "0.365", "0.095", "0.514", "0.2245", "0.101", "0.15"],
        [" F ", " 0.53", "", "0.135", "0.677", " ", "0.1415", "0.21"],
        ["", "0.44", "0.365", "0.125", "0.516", "0.2155", "0.114", "0.155"],
    ]
    columns = {name: [row[i] for row in rows] for i, name in enumerate(COLUMNS)}
    expected = load_package(package.path).predict(rows)
    assert np.allclose(predictor.predict(columns, 3), expected, rtol=1e-6)


def test_a_row_predicts_the_same_alone_or_in_a_batch(
    predictor: Predictor, abalone: Abalone
) -> None:
    frame = abalone.frame.head(8).copy()
    frame.loc[2, "sex"] = None
    frame.loc[5, "height"] = None
    batch = predictor.predict(columns_of(frame), 8)
    alone = [predictor.predict(columns_of(frame.iloc[[i]]), 1)[0] for i in range(8)]
    assert np.array_equal(batch, np.asarray(alone))


def test_the_compiled_features_are_the_preprocessors(
    predictor: Predictor, abalone: Abalone
) -> None:
    import joblib  # type: ignore[import-untyped]

    frame = abalone.frame.copy()
    frame.loc[0, "sex"] = np.nan
    frame.loc[1, "length"] = np.nan
    expected = joblib.load(abalone.preprocessor).transform(frame)
    features = predictor.features(columns_of(frame), len(frame))  # type: ignore[attr-defined]
    assert np.array_equal(features, expected)


def test_extra_columns_are_ignored_and_zero_rows_predict_nothing(
    predictor: Predictor, abalone: Abalone
) -> None:
    columns = {**columns_of(abalone.frame.head(2)), "rings": [1, 2]}
    assert predictor.predict(columns, 2).shape == (2,)
    empty = predictor.predict({name: [] for name in COLUMNS}, 0)
    assert empty.shape == (0,)


def test_bad_input_is_a_predict_error_naming_the_column(
    predictor: Predictor, abalone: Abalone
) -> None:
    columns = columns_of(abalone.frame.head(2))
    with pytest.raises(PredictError, match=r"lacks the column\(s\) \['height'\]") as info:
        predictor.predict({k: v for k, v in columns.items() if k != "height"}, 2)
    assert info.value.column == "height"
    assert isinstance(info.value, ValueError)
    with pytest.raises(PredictError, match="column 'length' has 1 values for 2 rows") as info:
        predictor.predict({**columns, "length": [0.4]}, 2)
    assert info.value.column == "length"
    with pytest.raises(PredictError, match=r"row 2: column 'diameter' is not a number: 'wide'"):
        predictor.predict({**columns, "diameter": [0.3, "wide"]}, 2)
    with pytest.raises(PredictError, match=r"row 1: column 'height' is infinite"):
        predictor.predict({**columns, "height": [float("inf"), 0.1]}, 2)
    with pytest.raises(PredictError, match=r"row 2: column 'sex' must be a string, not 3"):
        predictor.predict({**columns, "sex": ["M", 3]}, 2)


def test_native_false_predicts_through_pyfunc(
    package: PackageInfo, predictor: Predictor, abalone: Abalone
) -> None:
    slow = load_predictor(package.path, native=False)
    assert slow.kind == "pyfunc"
    assert slow.columns == tuple(COLUMNS)
    assert slow.describe()["native_fallback"] is None
    columns = columns_of(abalone.frame)
    assert np.allclose(slow.predict(columns, 40), predictor.predict(columns, 40), rtol=1e-6)
    with pytest.raises(PredictError, match="invalid model input"):
        slow.predict({**columns, "sex": list(range(40))}, 40)


def test_a_compiled_transform_that_disagrees_with_scikit_learn_is_not_used(
    package_copy: Path, pyfunc: Any, abalone: Abalone, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if a scikit-learn version transformed differently: the input example gives it away
    compile_for_real = _compile

    def off_by_one(preprocessor: Any, columns: Any) -> Any:
        compiled = compile_for_real(preprocessor, columns)
        compiled.blocks[0].after.append(_Elementwise("oops", np.add, np.asarray(1.0)))
        return compiled

    monkeypatch.setattr(loading, "_compile", off_by_one)  # where _transform_at_load calls it
    (package_copy / "artifacts" / PRECOMPILED_FILE).unlink()  # compiled at load, as before
    loaded = load_predictor(package_copy)
    assert loaded.describe()["transform"] == "scikit-learn"
    assert "differs from scikit-learn's" in loaded.describe()["fallback"]
    assert_predicts_like(loaded, pyfunc, abalone.frame)


def test_the_pipeline_constants_are_those_of_the_packaged_code() -> None:
    from modelyard.registry import pyfunc_models

    assert _PREPROCESSOR_ARTIFACT == pyfunc_models.PREPROCESSOR_ARTIFACT
    assert _BOOSTER_ARTIFACT == pyfunc_models.BOOSTER_ARTIFACT
    assert _CONFIG_ARTIFACT == pyfunc_models.CONFIG_ARTIFACT
    assert _CONFIG_FORMAT == pyfunc_models.CONFIG_FORMAT


# -- damaged packages ------------------------------------------------------------------------------


def test_a_corrupt_preprocessor_is_an_artifact_error(package_copy: Path) -> None:
    corrupt = package_copy / "artifacts" / "preprocessor.joblib"
    corrupt.write_bytes(b"not a joblib file")
    with pytest.raises(ArtifactError, match="cannot load the preprocessor") as info:
        load_predictor(package_copy)
    assert info.value.where == str(corrupt)
    assert info.value.hint


def test_a_corrupt_booster_is_an_artifact_error(package_copy: Path) -> None:
    corrupt = package_copy / "artifacts" / "xgboost-model.json"
    corrupt.write_text('{"learner": ')
    with pytest.raises(ArtifactError, match="cannot load the XGBoost model") as info:
        load_predictor(package_copy)
    assert info.value.where == str(corrupt)


def test_a_booster_of_another_width_is_an_artifact_error(package_copy: Path) -> None:
    import xgboost

    rng = np.random.default_rng(0)
    data = xgboost.DMatrix(rng.normal(size=(20, 3)), label=rng.normal(size=20))
    other = xgboost.train({"nthread": 1}, data, num_boost_round=1)
    other.save_model(str(package_copy / "artifacts" / "xgboost-model.json"))
    with pytest.raises(ArtifactError, match="makes 10 features but the booster expects 3"):
        load_predictor(package_copy)


def test_a_damaged_config_or_mlmodel_or_a_missing_file_is_an_artifact_error(
    package_copy: Path, tmp_path: Path
) -> None:
    config = package_copy / "artifacts" / "pipeline.json"
    config.write_text("{not json")
    with pytest.raises(ArtifactError, match="invalid pipeline config") as info:
        load_predictor(package_copy)
    assert info.value.where == str(config)
    (package_copy / "artifacts" / "xgboost-model.json").unlink()
    with pytest.raises(ArtifactError, match=r"incomplete: artifacts/xgboost-model.json missing"):
        load_predictor(package_copy)
    (package_copy / "MLmodel").write_text("flavors: [")
    with pytest.raises(ArtifactError, match="MLmodel file cannot be read"):
        load_predictor(package_copy)
    with pytest.raises(ArtifactError, match="no MLmodel file"):
        load_predictor(tmp_path)


def test_a_pipeline_of_another_format_is_served_by_pyfunc(
    package_copy: Path, abalone: Abalone
) -> None:
    # a package made by a later modelyard, whose code (shipped inside) reads another format
    new, old = "modelyard-inference-pipeline/2", _CONFIG_FORMAT
    for path in (package_copy / "artifacts" / "pipeline.json", package_copy / "pyfunc_models.py"):
        path.write_text(path.read_text().replace(old, new))
    loaded = load_predictor(package_copy)
    assert loaded.kind == "pyfunc"
    assert new in loaded.describe()["native_fallback"]
    assert loaded.predict(columns_of(abalone.frame), 40).shape == (40,)


# -- the precompiled preprocessor: written at packaging, loaded without scikit-learn ----------


def _compiled_file(folder: Path) -> Path:
    return folder / "artifacts" / PRECOMPILED_FILE


def test_the_package_holds_the_compiled_preprocessor_and_serving_loads_it(
    package: PackageInfo, predictor: Predictor
) -> None:
    import hashlib

    document = json.loads(_compiled_file(package.path).read_text())
    assert document["format"] == "modelyard-compiled-preprocessor/1"
    assert document["transform"]["format"] == "modelyard-compiled-transform/1"
    joblib_file = package.path / "artifacts" / "preprocessor.joblib"
    assert document["preprocessor_sha256"] == hashlib.sha256(joblib_file.read_bytes()).hexdigest()
    assert len(document["checks"]) == 2  # the input example and a row of missing values
    described = predictor.describe()
    assert described["compiled_from"] == PRECOMPILED_FILE
    assert described["verified"] == "packaging"
    assert described["precompiled_fallback"] is None
    assert described["booster"] == "libxgboost"
    assert described["preprocessor"] == "ColumnTransformer"


def test_the_precompiled_pipeline_predicts_exactly_like_pyfunc(
    predictor: Predictor, pyfunc: Any, abalone: Abalone
) -> None:
    rows = read_rows(SLICE_ROWS, SLICE_ROWS + 1000)
    rows.loc[3, "sex"] = None
    rows.loc[4, ["length", "height"]] = np.nan
    for frame in (abalone.frame, rows, rows.head(1)):
        got = predictor.predict(columns_of(frame), len(frame))
        assert np.array_equal(got, np.asarray(pyfunc.predict(frame), dtype=np.float64))


_LOAD_IN_A_FRESH_PROCESS = """
import json, sys
from modelyard.serving.predictors import load_predictor
request = json.load(sys.stdin)
predictor = load_predictor(request["path"])
predictions = predictor.predict(request["columns"], request["rows"])
heavy = ("sklearn", "pandas", "scipy", "mlflow", "xgboost", "joblib")
print(json.dumps({
    "imported": [m for m in heavy if m in sys.modules],
    "described": predictor.describe(),
    "predictions": predictions.tolist(),
}))
"""


def test_a_fresh_process_loads_the_package_without_scikit_learn_pandas_scipy_or_mlflow(
    package: PackageInfo, pyfunc: Any, abalone: Abalone
) -> None:
    frame = abalone.frame
    request = {"path": str(package.path), "columns": columns_of(frame), "rows": len(frame)}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_A_FRESH_PROCESS],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["imported"] == []
    assert answer["described"]["compiled_from"] == PRECOMPILED_FILE
    assert answer["described"]["booster"] == "libxgboost"
    expected = np.asarray(pyfunc.predict(frame), dtype=np.float64)
    assert np.array_equal(np.asarray(answer["predictions"]), expected)


def _tamper(preprocessor_file: Path) -> None:
    """Another preprocessor in the same file: the scaler centers the numbers elsewhere."""
    import joblib

    preprocessor = joblib.load(preprocessor_file)
    preprocessor.named_transformers_["numeric"].named_steps["scaler"].mean_ += 0.25
    joblib.dump(preprocessor, preprocessor_file)


def test_a_precompiled_file_of_another_preprocessor_is_not_used(
    package_copy: Path, predictor: Predictor, abalone: Abalone
) -> None:
    import mlflow.pyfunc

    _tamper(package_copy / "artifacts" / "preprocessor.joblib")
    loaded = load_predictor(package_copy)
    described = loaded.describe()
    assert "compiled from another preprocessor" in described["precompiled_fallback"]
    assert described["compiled_from"] == "preprocessor.joblib"  # compiled again, at load
    assert described["verified"] == "load"
    assert described["booster"] == "xgboost"
    # the predictions are the tampered preprocessor's, as pyfunc makes them
    got = assert_predicts_like(loaded, mlflow.pyfunc.load_model(str(package_copy)), abalone.frame)
    assert not np.allclose(got, predictor.predict(columns_of(abalone.frame), 40))


def test_a_package_without_the_precompiled_file_loads_as_before(
    package_copy: Path, pyfunc: Any, abalone: Abalone
) -> None:
    _compiled_file(package_copy).unlink()  # a package made before modelyard wrote one
    loaded = load_predictor(package_copy)
    described = loaded.describe()
    assert f"has no {PRECOMPILED_FILE}" in described["precompiled_fallback"]
    assert described["transform"] == "compiled"
    assert described["compiled_from"] == "preprocessor.joblib"
    assert described["verified"] == "load"
    assert_predicts_like(loaded, pyfunc, abalone.frame)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda doc: "{not json", "is unreadable"),
        (lambda doc: json.dumps({**doc, "format": "modelyard-compiled-preprocessor/9"}), "format"),
        (lambda doc: json.dumps({**doc, "transform": {"format": "x"}}), "is unreadable"),
        (lambda doc: json.dumps(doc).replace('"subtract"', '"add"'), "differs from the packaging"),
        (lambda doc: json.dumps(doc).replace('"median"', "NaN"), "is unreadable"),
    ],
    ids=["not-json", "other-format", "bad-transform", "other-op", "nan-token"],
)
def test_a_damaged_precompiled_file_is_not_used(
    package_copy: Path, pyfunc: Any, abalone: Abalone, damage: Any, reason: str
) -> None:
    path = _compiled_file(package_copy)
    path.write_text(damage(json.loads(path.read_text())))
    loaded = load_predictor(package_copy)
    described = loaded.describe()
    assert reason in described["precompiled_fallback"]
    assert described["compiled_from"] == "preprocessor.joblib"
    assert_predicts_like(loaded, pyfunc, abalone.frame)


def test_verify_checks_the_precompiled_transform_against_scikit_learn_again(
    package_copy: Path, pyfunc: Any, abalone: Abalone
) -> None:
    # a precompiled transform that is off, with checks made to agree with it: only
    # scikit-learn can tell
    path = _compiled_file(package_copy)
    document = json.loads(path.read_text())
    document["transform"]["blocks"][0]["before"][1]["value"][0] += 0.5
    transform = _CompiledTransform.from_json(document["transform"])
    for check in document["checks"]:
        columns = check["columns"]
        check["features"] = transform(columns, len(columns["sex"])).tolist()
    path.write_text(json.dumps(document))

    trusting = load_predictor(package_copy)
    assert trusting.describe()["compiled_from"] == PRECOMPILED_FILE
    verified = load_predictor(package_copy, verify=True)
    described = verified.describe()
    assert described["transform"] == "scikit-learn"
    assert "differs from scikit-learn's" in described["fallback"]
    assert described["precompiled_fallback"] is None  # it was used, and found wrong
    assert_predicts_like(verified, pyfunc, abalone.frame)


def test_verify_passes_a_sound_precompiled_transform(package: PackageInfo, pyfunc: Any) -> None:
    loaded = load_predictor(package.path, verify=True)
    described = loaded.describe()
    assert described["transform"] == "compiled"
    assert described["compiled_from"] == PRECOMPILED_FILE
    assert described["verified"] == "load"


def test_a_booster_of_another_width_is_refused_on_the_fast_path_too(package_copy: Path) -> None:
    import xgboost

    rng = np.random.default_rng(0)
    data = xgboost.DMatrix(rng.normal(size=(20, 3)), label=rng.normal(size=20))
    other = xgboost.train({"nthread": 1}, data, num_boost_round=1)
    other.save_model(str(package_copy / "artifacts" / "xgboost-model.json"))
    assert _compiled_file(package_copy).is_file()
    with pytest.raises(ArtifactError, match="makes 10 features but the booster expects 3"):
        load_predictor(package_copy)


def test_the_library_booster_predicts_as_xgboost_does(package: PackageInfo) -> None:
    import xgboost

    booster_file = package.path / "artifacts" / "xgboost-model.json"
    library = _xgboost_library()
    assert library is not None
    native = _LibBooster(library, booster_file, nthread=1)
    booster = xgboost.Booster(model_file=str(booster_file))
    assert native.num_features() == booster.num_features() == 10
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(300, 10))
    matrix[::7, 2] = np.nan
    for x in (matrix, np.asfortranarray(matrix), matrix[::3], matrix[:1], matrix[:0]):
        expected = booster.inplace_predict(x, validate_features=False)
        got = native.inplace_predict(x)
        assert got.dtype == expected.dtype and np.array_equal(got, expected)
    with pytest.raises(_XGBoostError, match=r"[Ff]eature"):
        native.inplace_predict(matrix[:, :4])


# -- the compiler, transformer by transformer ------------------------------------------------------


def _synthetic(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.normal(10, 3, rows),
            "b": rng.integers(0, 5, rows).astype(float),
            "c": rng.uniform(-1, 1, rows),
            "color": pd.Series(rng.choice(["red", "green", "blue"], rows), dtype=object),
            "size": pd.Series(rng.choice(["S", "M", "L", "XL"], rows), dtype=object),
            "code": rng.integers(1, 4, rows).astype(float),
        }
    )
    frame.loc[::7, "a"] = np.nan
    frame.loc[3::9, "c"] = np.nan
    frame.loc[2::8, "color"] = np.nan
    return frame


def _test_rows(unknown: bool) -> pd.DataFrame:
    """Rows to transform: with missing values, and unseen categories and codes if `unknown`."""
    frame = _synthetic(12, seed=1)
    frame.loc[0, ["a", "b", "c"]] = np.nan
    frame.loc[1, ["color", "size"]] = np.nan
    if unknown:
        frame.loc[2, "color"] = "purple"
        frame.loc[3, "size"] = "XXS"
        frame.loc[4, "code"] = 7.0
    return frame


def _as_input(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Column lists as a JSON client sends them: None for missing strings."""
    columns = columns_of(frame)
    for name in {"color", "size"} & set(columns):
        columns[name] = [None if isinstance(v, float) else v for v in columns[name]]
    return columns


def _configs() -> dict[str, Callable[[], Any]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

    def dense(**kw: Any) -> OneHotEncoder:
        return OneHotEncoder(sparse_output=False, **kw)

    numbers, strings = ["a", "b", "c"], ["color", "size"]
    return {
        "abalone-like": lambda: ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numbers),
                (
                    "cat",
                    make_pipeline(
                        SimpleImputer(strategy="constant", fill_value="missing"),
                        dense(handle_unknown="ignore"),
                    ),
                    strings,
                ),
            ],
            sparse_threshold=0,
        ),
        "mean-minmax-nan-category": lambda: ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="mean"), MinMaxScaler()), numbers),
                ("cat", dense(handle_unknown="ignore"), strings),  # NaN is a category
            ]
        ),
        "most-frequent": lambda: ColumnTransformer(
            [
                (
                    "num",
                    make_pipeline(
                        SimpleImputer(strategy="most_frequent"), StandardScaler(with_mean=False)
                    ),
                    numbers,
                ),
                (
                    "cat",
                    make_pipeline(SimpleImputer(strategy="most_frequent"), dense()),
                    ["color"],
                ),
            ]
        ),
        "constant-clip-weights": lambda: ColumnTransformer(
            [
                (
                    "num",
                    Pipeline(
                        [
                            ("impute", SimpleImputer(strategy="constant", fill_value=-1.0)),
                            ("center", StandardScaler(with_std=False)),
                            ("skip", "passthrough"),
                            ("clip", MinMaxScaler(feature_range=(-1, 1), clip=True)),
                        ]
                    ),
                    [2, 0],  # by position, in another order
                ),
                ("cat", dense(handle_unknown="ignore"), ["size"]),
                ("gone", "drop", ["color"]),
                ("nothing", StandardScaler(), []),
            ],
            transformer_weights={"cat": 2.5},
        ),
        "remainder-passthrough": lambda: ColumnTransformer(
            [
                ("scaled", StandardScaler(), ["a"]),
                ("gone", "drop", strings),
                ("kept", "passthrough", ["code"]),
            ],
            remainder="passthrough",  # b and c, NaN and all
        ),
        "numeric-one-hot": lambda: ColumnTransformer(
            [
                ("codes", dense(handle_unknown="ignore"), ["code"]),
                ("num", SimpleImputer(strategy="median", keep_empty_features=True), ["a", "c"]),
            ]
        ),
        "pipeline-after-ct": lambda: make_pipeline(
            ColumnTransformer(
                [
                    ("num", SimpleImputer(), numbers),
                    ("cat", dense(handle_unknown="ignore"), ["size"]),
                ]
            ),
            StandardScaler(),
        ),
        "empty-column-dropped": lambda: ColumnTransformer(
            [("num", make_pipeline(SimpleImputer(), StandardScaler()), ["empty", "a", "b"])]
        ),
        "bare-pipeline": lambda: make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler()),
    }


def _fit(name: str) -> tuple[Any, list[str]]:
    frame = _synthetic()
    if name == "empty-column-dropped":
        frame["empty"] = np.nan  # no value to impute from: SimpleImputer drops the column
    if name == "bare-pipeline":
        frame = frame[["a", "b", "c"]]
    return _configs()[name]().fit(frame), [str(c) for c in frame.columns]


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
@pytest.mark.parametrize("name", list(_configs()))
def test_the_compiled_transform_is_the_preprocessors(name: str) -> None:
    preprocessor, columns = _fit(name)
    compiled = _compile(preprocessor, columns)
    unknown = name not in ("most-frequent",)  # its encoder refuses unknown categories
    rows = _test_rows(unknown)
    if name == "empty-column-dropped":
        rows["empty"] = np.nan
    rows = rows[columns]
    expected = np.asarray(preprocessor.transform(rows), dtype=np.float64)
    got = compiled(_as_input(rows), len(rows))
    assert got.shape == expected.shape
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert compiled.width == expected.shape[1]


def _through_json(compiled: Any) -> Any:
    text = json.dumps(compiled.to_json(), allow_nan=False)  # plain JSON, or it raises
    return _CompiledTransform.from_json(json.loads(text))


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
@pytest.mark.parametrize("name", list(_configs()))
def test_the_compiled_transform_survives_json(name: str) -> None:
    preprocessor, columns = _fit(name)
    compiled = _compile(preprocessor, columns)
    loaded = _through_json(compiled)
    assert loaded.to_json() == compiled.to_json()
    assert loaded.describe() == compiled.describe()
    assert loaded.width == compiled.width
    unknown = name not in ("most-frequent",)
    rows = _test_rows(unknown)
    if name == "empty-column-dropped":
        rows["empty"] = np.nan
    rows = rows[columns]
    for frame in (rows, rows.head(1)):
        expected = compiled(_as_input(frame), len(frame))
        assert np.array_equal(loaded(_as_input(frame), len(frame)), expected, equal_nan=True)
    if not unknown:  # it refuses the same rows, saying the same
        refused = {**_as_input(rows), "color": ["purple"] * len(rows)}
        with pytest.raises(PredictError) as original:
            compiled(refused, len(rows))
        with pytest.raises(PredictError) as again:
            loaded(refused, len(rows))
        assert str(again.value) == str(original.value)


def test_categories_of_every_type_survive_json() -> None:
    missing = _MISSING
    encoder = _OneHot(
        names=("n", "s"),
        lookups=(
            {1: 0, 2.5: 1, -0.0: 2, float("inf"): 3, missing: 4},
            {"a": 0, " b": 1, "": 2, None: 3, missing: 4},
        ),
        offsets=(0, 5),
        width=10,
        strings=True,
        refuse_unknown=False,
        fills=("x", None),
    )
    block = _Block("b", ("n", "s"), True, ["one-hot(10)"], encoder=encoder, stop=10)
    compiled = _CompiledTransform((block,), 10)
    loaded = _through_json(compiled)
    lookups = loaded.blocks[0].encoder.lookups
    assert lookups == encoder.lookups
    # the same types: an int stays an int, a float a float, None and the NaN category apart
    for before, after in zip(encoder.lookups, lookups, strict=True):
        assert [type(k) for k in before] == [type(k) for k in after]
    assert missing in lookups[0] and None in lookups[1] and missing in lookups[1]
    assert loaded.blocks[0].encoder.fills == ("x", None)
    values = [1, 1.0, "1", True, None, float("nan"), -float("inf"), np.float64(0.5), np.int64(3)]
    back = [
        _value(v) for v in json.loads(json.dumps([_value_json(v) for v in values], allow_nan=False))
    ]
    assert [type(v) for v in back] == [int, float, str, bool, type(None), float, float, float, int]
    assert back[:5] == values[:5] and np.isnan(back[5]) and back[6:] == [-np.inf, 0.5, 3]


def test_floats_survive_json_with_nan_and_infinities() -> None:
    for array in (
        np.asarray(2.5),
        np.array([np.nan, np.inf, -np.inf, -0.0, 1e-300]),
        np.array([[1.0, np.nan], [np.inf, 0.1 + 0.2]]),
    ):
        text = json.dumps(_floats_json(array), allow_nan=False)
        back = _floats(json.loads(text), ndim=array.ndim)
        assert back.dtype == np.float64
        assert np.array_equal(back, array, equal_nan=True)
        assert np.array_equal(np.signbit(back), np.signbit(array))


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: {**t, "format": "modelyard-compiled-transform/0"},
        lambda t: {**t, "width": t["width"] + 1},
        lambda t: {**t, "blocks": []},
        lambda t: {**t, "blocks": t["blocks"][1:]},  # a gap at [0:...]
        lambda t: _edit(t, ["blocks", 0, "before", 1, "op"], "system"),
        lambda t: _edit(t, ["blocks", 0, "before", 1, "value"], [[1.0], [2.0, 3.0]]),
        lambda t: _edit(t, ["blocks", 0, "before", 0, "fill"], ["one", 2]),
        lambda t: _edit(t, ["blocks", 1, "encoder", "categories"], [["a", "a"]]),
        lambda t: _edit(t, ["blocks", 1, "encoder", "categories"], [[{"python": "os.system"}]]),
        lambda t: _edit(t, ["blocks", 1, "encoder"], None),
        lambda t: _edit(t, ["blocks", 1, "inputs"], ["color", 3]),
        lambda t: _edit(t, ["blocks", 1, "categorical"], "yes"),
    ],
)
def test_json_that_is_not_a_compiled_transform_is_a_value_error(damage: Any) -> None:
    preprocessor, columns = _fit("abalone-like")
    data = _compile(preprocessor, columns).to_json()
    with pytest.raises(ValueError):
        _CompiledTransform.from_json(damage(json.loads(json.dumps(data))))


def _edit(data: Any, keys: list[Any], value: Any) -> Any:
    target = data
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return data


def test_an_encoder_that_refuses_unknown_categories_says_which_column() -> None:
    preprocessor, columns = _fit("most-frequent")
    compiled = _compile(preprocessor, columns)
    rows = _test_rows(unknown=False)[columns]
    columns_in = _as_input(rows)
    columns_in["color"][5] = "purple"
    with pytest.raises(ValueError, match="unknown categor"):
        preprocessor.transform(pd.DataFrame(columns_in))
    with pytest.raises(PredictError, match=r"row 6: column 'color' has the unknown category") as e:
        compiled(columns_in, len(rows))
    assert e.value.column == "color"


@pytest.mark.parametrize(
    "make",
    [
        "FunctionTransformer(np.log1p)",
        "PolynomialFeatures()",
        "OneHotEncoder(drop='first')",
        "OneHotEncoder(min_frequency=5)",
        "SimpleImputer(add_indicator=True)",
        "RobustScaler()",
    ],
)
def test_transformers_the_compiler_does_not_know_are_refused(make: str) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer  # noqa: F401 (used by eval)
    from sklearn.preprocessing import (  # noqa: F401 (used by eval)
        FunctionTransformer,
        OneHotEncoder,
        PolynomialFeatures,
        RobustScaler,
    )

    columns = ["color"] if "OneHot" in make else ["b", "code"]
    transformer = eval(make)  # a short table of transformers
    frame = _synthetic()
    preprocessor = ColumnTransformer([("x", transformer, columns)]).fit(frame)
    with pytest.raises(_Unsupported):
        _compile(preprocessor, list(frame.columns))


# -- packages with other preprocessors -------------------------------------------------------


def _package(preprocessor: Any, frame: pd.DataFrame, dest: Path) -> Path:
    """Fit a small booster on the preprocessor's output and package the two as modelyard does."""
    import joblib
    import xgboost

    features = np.asarray(preprocessor.transform(frame), dtype=np.float64)
    label = np.nan_to_num(frame["a"].to_numpy()) + features.sum(axis=1)
    booster = xgboost.train(
        {"nthread": 1, "max_depth": 3}, xgboost.DMatrix(features, label=label), num_boost_round=8
    )
    dest.mkdir()
    joblib.dump(preprocessor, dest / "preprocessor.joblib")
    booster.save_model(str(dest / "xgboost-model.json"))
    info = package_inference_pipeline(
        dest / "package",
        preprocessor=dest / "preprocessor.joblib",
        model=dest / "xgboost-model.json",
        input_example=frame.head(3),
        column_names=list(frame.columns),
    )
    return info.path


def test_an_unsupported_preprocessor_falls_back_to_scikit_learn(tmp_path: Path) -> None:
    import mlflow.pyfunc
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    frame = _synthetic()
    preprocessor = ColumnTransformer(
        [
            ("log", make_pipeline(SimpleImputer(), FunctionTransformer(np.abs)), ["a", "c"]),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["color"]),
        ]
    ).fit(frame)
    folder = _package(preprocessor, frame, tmp_path / "fallback")

    loaded = load_predictor(folder)
    described = loaded.describe()
    assert loaded.kind == "native:inference-pipeline"
    assert described["transform"] == "scikit-learn"
    assert "FunctionTransformer" in described["fallback"]
    assert not _compiled_file(folder).exists()  # not compiled at packaging either
    assert "has no preprocessor.compiled.json" in described["precompiled_fallback"]
    model = mlflow.pyfunc.load_model(str(folder))
    rows = _test_rows(unknown=True)
    rows.loc[5, "color"] = None
    assert_predicts_like(loaded, model, rows)
    with pytest.raises(PredictError, match=r"row 1: column 'a' is not a number"):
        loaded.predict({**_as_input(rows), "a": ["x", *rows["a"].tolist()[1:]]}, len(rows))


def test_a_compiled_package_with_other_transformers_predicts_like_pyfunc(tmp_path: Path) -> None:
    import mlflow.pyfunc

    preprocessor, columns = _fit("constant-clip-weights")
    frame = _synthetic()[columns]
    folder = _package(preprocessor, frame, tmp_path / "compiled")
    loaded = load_predictor(folder)
    assert loaded.describe()["transform"] == "compiled"
    assert_predicts_like(loaded, mlflow.pyfunc.load_model(str(folder)), _test_rows(True))


def test_unknown_categories_refused_by_the_encoder_are_predict_errors(tmp_path: Path) -> None:
    preprocessor, columns = _fit("most-frequent")
    folder = _package(preprocessor, _synthetic()[columns], tmp_path / "strict")
    loaded = load_predictor(folder)
    assert loaded.describe()["transform"] == "compiled"
    rows = _as_input(_test_rows(unknown=False))
    rows["color"][0] = "purple"
    with pytest.raises(PredictError, match="column 'color' has the unknown category 'purple'"):
        loaded.predict(rows, 12)


# -- MLflow flavor packages ------------------------------------------------------------------


def _numbers(rows: int = 40) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["x1", "x2", "x3"])
    return frame, frame["x1"].to_numpy() * 2 - frame["x2"].to_numpy() + rng.normal(0, 0.1, rows)


def _save(flavor: str, model: Any, frame: pd.DataFrame, dest: Path) -> Path:
    """Save with MLflow's own flavor, with a signature and an input example."""
    import mlflow.models
    import mlflow.sklearn
    import mlflow.xgboost
    import xgboost

    example = frame.head(3)
    if isinstance(model, xgboost.Booster):
        predictions = model.predict(xgboost.DMatrix(example))
    else:
        predictions = model.predict(example)
    signature = mlflow.models.infer_signature(example, predictions)
    save = mlflow.xgboost.save_model if flavor == "xgboost" else mlflow.sklearn.save_model
    save(model, str(dest), signature=signature, input_example=example)
    return dest


def _xgboost_models() -> dict[str, Callable[[pd.DataFrame, np.ndarray], Any]]:
    import xgboost

    params = {"nthread": 1, "max_depth": 3}
    return {
        "booster-named": lambda x, y: xgboost.train(params, xgboost.DMatrix(x, label=y), 6),
        "booster-unnamed": lambda x, y: xgboost.train(
            params, xgboost.DMatrix(x.to_numpy(), label=y), 6
        ),
        "regressor": lambda x, y: xgboost.XGBRegressor(n_estimators=6, n_jobs=1).fit(x, y),
        "classifier": lambda x, y: xgboost.XGBClassifier(n_estimators=6, n_jobs=1).fit(
            x, (y > 0).astype(int)
        ),
    }


@pytest.mark.parametrize("name", list(_xgboost_models()))
def test_xgboost_flavor_packages_predict_natively_like_pyfunc(name: str, tmp_path: Path) -> None:
    import mlflow.pyfunc

    frame, label = _numbers()
    folder = _save("xgboost", _xgboost_models()[name](frame, label), frame, tmp_path / name)
    loaded = load_predictor(folder)
    assert loaded.kind == "native:xgboost"
    assert loaded.columns == ("x1", "x2", "x3")
    model = mlflow.pyfunc.load_model(str(folder))
    rows = _numbers(25)[0]
    rows.loc[3, "x2"] = np.nan  # XGBoost's missing value
    assert_predicts_like(loaded, model, rows)
    assert_predicts_like(loaded, model, rows.head(1))


def _sklearn_models() -> dict[str, Callable[[pd.DataFrame, np.ndarray], Any]]:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    by_name = make_column_transformer((StandardScaler(), ["x3", "x1"]))
    return {
        "pipeline-on-a-frame": lambda x, y: make_pipeline(StandardScaler(), Ridge()).fit(x, y),
        "on-a-matrix": lambda x, y: LinearRegression().fit(x.to_numpy(), y),
        "classifier": lambda x, y: LogisticRegression().fit(x, np.where(y > 0, "yes", "no")),
        "columns-by-name": lambda x, y: make_pipeline(by_name, Ridge()).fit(x, y),
    }


@pytest.mark.filterwarnings("ignore:X has feature names")  # pyfunc, for the matrix-fit model
@pytest.mark.parametrize("name", list(_sklearn_models()))
def test_sklearn_flavor_packages_predict_natively_like_pyfunc(name: str, tmp_path: Path) -> None:
    import mlflow.pyfunc

    frame, label = _numbers()
    folder = _save("sklearn", _sklearn_models()[name](frame, label), frame, tmp_path / name)
    loaded = load_predictor(folder)
    assert loaded.kind == "native:sklearn"
    # a matrix is faster; only an estimator that selects columns by name needs a DataFrame
    assert loaded.describe()["input"] == ("DataFrame" if name == "columns-by-name" else "matrix")
    model = mlflow.pyfunc.load_model(str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        loaded.predict(columns_of(_numbers(3)[0]), 3)
    assert_predicts_like(loaded, model, _numbers(25)[0])
    assert_predicts_like(loaded, model, _numbers(1)[0])
    if name == "pipeline-on-a-frame":  # scikit-learn refuses NaN: a PredictError
        with pytest.raises(PredictError, match="the model refuses the input"):
            loaded.predict({"x1": [None], "x2": [1.0], "x3": [2.0]}, 1)


def test_a_sklearn_package_with_string_inputs_is_served_by_pyfunc(tmp_path: Path) -> None:
    import mlflow.pyfunc
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = _synthetic()[["b", "size"]]
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["size"])), Ridge()
    ).fit(frame, frame["b"])
    folder = _save("sklearn", model, frame, tmp_path / "strings")
    loaded = load_predictor(folder)
    assert loaded.kind == "pyfunc"
    assert "non-numeric inputs: size (string)" in loaded.describe()["native_fallback"]
    assert_predicts_like(loaded, mlflow.pyfunc.load_model(str(folder)), frame.head(5))


def test_a_corrupt_xgboost_flavor_model_is_an_artifact_error(tmp_path: Path) -> None:
    frame, label = _numbers()
    folder = _save("xgboost", _xgboost_models()["regressor"](frame, label), frame, tmp_path / "m")
    model_file = next(folder.glob("model.*"))
    model_file.write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="cannot load the XGBoost model") as info:
        load_predictor(folder)
    assert info.value.where == str(model_file)


def test_importing_predictors_imports_no_model_library() -> None:
    code = (
        "import json, sys\n"
        "import modelyard.serving.predictors\n"
        "heavy = ('mlflow', 'pandas', 'xgboost', 'sklearn', 'joblib')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
