"""Tests of steps/train.py and steps/evaluate.py, and of preprocess -> train -> evaluate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

SMALL = {"num_round": 5}


@pytest.fixture(scope="module")
def splits(preprocess_step, abalone_lines, tmp_path_factory) -> Path:
    """Preprocessed splits of an 800-row slice of the data."""
    out = tmp_path_factory.mktemp("splits")
    source = out / "slice.csv"
    source.write_text("\n".join(abalone_lines[:800]) + "\n", encoding="utf-8")
    preprocess_step.preprocess(
        source, out / "train", out / "validation", out / "test", out / "preprocessor", seed=1
    )
    return out


def test_preprocess_train_evaluate(splits, train_step, evaluate_step, tmp_path):
    hyperparameters = train_step.Hyperparameters(**SMALL)
    metrics = train_step.train(
        splits / "train", splits / "validation", tmp_path / "model", hyperparameters
    )
    assert (tmp_path / "model" / "xgboost-model.json").is_file()
    assert set(metrics) == {"train_rmse", "validation_rmse"}
    assert all(math.isfinite(v) and v > 0 for v in metrics.values())

    evaluate_step.evaluate(tmp_path / "model", splits / "test", tmp_path / "evaluation")
    report = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert set(report) == {"regression_metrics"}
    assert set(report["regression_metrics"]) == {"mse"}
    mse = report["regression_metrics"]["mse"]
    assert set(mse) == {"value", "standard_deviation"}
    assert isinstance(mse["value"], float) and math.isfinite(mse["value"]) and mse["value"] > 0
    assert isinstance(mse["standard_deviation"], float)
    assert math.isfinite(mse["standard_deviation"]) and mse["standard_deviation"] >= 0


def test_training_is_deterministic_with_a_seed(splits, train_step, tmp_path):
    for name in ("a", "b"):
        train_step.train(
            splits / "train",
            splits / "validation",
            tmp_path / name,
            train_step.Hyperparameters(**SMALL),
        )
    model_a = (tmp_path / "a" / "xgboost-model.json").read_bytes()
    assert model_a == (tmp_path / "b" / "xgboost-model.json").read_bytes()


def test_hyperparameters_accept_both_spellings(train_step):
    parser = train_step.build_parser()
    common = ["--train", "t", "--validation", "v", "--model", "m"]
    dashed = parser.parse_args(
        [*common, "--num-round", "3", "--max-depth", "2", "--min-child-weight", "1"]
    )
    underscored = parser.parse_args(
        [*common, "--num_round", "3", "--max_depth", "2", "--min_child_weight", "1"]
    )
    assert vars(dashed) == vars(underscored)
    assert (dashed.num_round, dashed.max_depth, dashed.min_child_weight) == (3, 2, 1.0)
    defaults = parser.parse_args(common)
    assert (defaults.num_round, defaults.max_depth, defaults.eta, defaults.gamma) == (
        50,
        5,
        0.2,
        4.0,
    )
    assert (defaults.min_child_weight, defaults.subsample, defaults.seed) == (6.0, 0.7, 42)


def test_out_of_range_hyperparameter_is_a_usage_error(train_step, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_step.main(["--train", "t", "--validation", "v", "--model", "m", "--subsample", "1.5"])
    assert exit_info.value.code == 2
    assert "--subsample" in capsys.readouterr().err


def test_train_rejects_a_non_numeric_csv(train_step, splits, tmp_path, capsys):
    bad = tmp_path / "train"
    bad.mkdir()
    lines = (splits / "train" / "train.csv").read_text().splitlines()[:5]
    lines[2] = "x" + lines[2]
    (bad / "train.csv").write_text("\n".join(lines) + "\n")
    code = train_step.main(
        ["--train", str(bad), "--validation", str(splits / "validation"), "--model", str(tmp_path)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert str(bad / "train.csv") in err and "line 3: column 1 is not a number" in err


def test_evaluate_rejects_a_missing_model_and_wrong_width(
    evaluate_step, train_step, splits, tmp_path, run_script
):
    result = run_script(
        "evaluate",
        "--model", tmp_path / "no-model",
        "--test", splits / "test",
        "--evaluation", tmp_path / "evaluation",
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"evaluate: error: {tmp_path / 'no-model'}: no such model folder or file"
    )
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(evaluate_step.InputError, match=r"folder has no xgboost-model\.json"):
        evaluate_step.evaluate(tmp_path / "empty-model", splits / "test", tmp_path / "evaluation")

    train_step.train(
        splits / "train",
        splits / "validation",
        tmp_path / "model",
        train_step.Hyperparameters(**SMALL),
    )
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("10,0.5,0.5\n")
    with pytest.raises(evaluate_step.InputError, match="has 2 features but the model expects 10"):
        evaluate_step.evaluate(tmp_path / "model", narrow, tmp_path / "evaluation")


def test_regression_report_values(evaluate_step):
    report = evaluate_step.regression_report([1.0, 2.0, 4.0], [1.0, 3.0, 2.0])
    # squared errors 0, 1, 4: mean 5/3, population standard deviation sqrt(26/9)
    assert report["regression_metrics"]["mse"]["value"] == pytest.approx(5 / 3)
    assert report["regression_metrics"]["mse"]["standard_deviation"] == pytest.approx(
        math.sqrt(26 / 9)
    )
