"""`modelyard run` refuses bad parameters and invalid projects, and records nothing then."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.testing import write_project

PROJECT = """\
pipelines:
  train:
    parameters:
      depth: {type: int, default: 3}
      rate: {type: float, default: 0.1}
      early: {type: bool, default: false}
      grid: {type: json, default: {a: 1}}
      name: {type: str, default: m}
      algo: {type: str, default: xgb, choices: [xgb, rf]}
    steps:
      fit:
        run: >-
          echo ${{ params.depth }} ${{ params.rate }} ${{ params.early }}
          ${{ params.name }} ${{ params.algo }}
  needs:
    parameters:
      data: {type: path, required: true}
    steps:
      fit: {run: "echo ${{ params.data }}"}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", PROJECT)


def assert_nothing_recorded(root: Path, cli: Callable, recorded_runs: Callable) -> None:
    assert recorded_runs(root) == []
    result = cli(root, "runs", "--json")
    assert result.code == 0
    assert result.json() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "depth=deep"], "parameter 'depth' (int): expected an integer, got 'deep'"),
        (["-p", "rate=fast"], "parameter 'rate' (float): expected a number, got 'fast'"),
        (["-p", "early=maybe"], "parameter 'early' (bool): expected true or false"),
        (["-p", "grid={oops"], "parameter 'grid' (json): expected JSON"),
        (["-p", "algo=svm"], "'svm' is not one of the allowed values: 'xgb', 'rf'"),
        (["-p", "depht=5"], "pipeline 'train' has no parameter 'depht'"),
        (["-p", "depth"], "'-p depth' is not KEY=VALUE"),
    ],
)
def test_bad_parameter(
    root: Path, cli: Callable, recorded_runs: Callable, args: list[str], message: str
):
    result = cli(root, "run", "train", *args)
    assert result.code == 2
    assert message in result.err
    assert "fix:" in result.err
    assert_nothing_recorded(root, cli, recorded_runs)


def test_unknown_parameter_lists_the_known_ones(
    root: Path, cli_process: Callable, cli: Callable, recorded_runs: Callable
):
    result = cli_process(root, "run", "train", "-p", "depht=5")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert "error: -p depht: pipeline 'train' has no parameter 'depht'" in result.err
    assert "fix: the parameters are: algo, depth, early, grid, name, rate" in result.err
    assert_nothing_recorded(root, cli, recorded_runs)


def test_badly_typed_parameter(
    root: Path, cli_process: Callable, cli: Callable, recorded_runs: Callable
):
    result = cli_process(root, "run", "train", "-p", "depth=5.5")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert "error: -p depth=5.5: parameter 'depth' (int): expected an integer" in result.err
    assert "fix: pass a int value, e.g. -p depth=3" in result.err
    assert_nothing_recorded(root, cli, recorded_runs)


def test_required_parameter(
    root: Path, cli_process: Callable, cli: Callable, recorded_runs: Callable
):
    result = cli_process(root, "run", "needs")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert "parameter 'data' is required" in result.err
    assert "fix: pass it with -p data=VALUE" in result.err
    assert_nothing_recorded(root, cli, recorded_runs)


def test_unknown_pipeline(root: Path, cli: Callable, recorded_runs: Callable):
    result = cli(root, "run", "deploy")
    assert result.code == 2
    assert "no pipeline named 'deploy'" in result.err
    assert "the pipelines are: train, needs" in result.err
    assert_nothing_recorded(root, cli, recorded_runs)


def test_unknown_no_cache_step(root: Path, cli: Callable, recorded_runs: Callable):
    result = cli(root, "run", "train", "--no-cache-step", "nope")
    assert result.code == 2
    assert "has no step 'nope'" in result.err
    assert_nothing_recorded(root, cli, recorded_runs)


def test_parameters_are_converted_to_their_types(root: Path, cli: Callable):
    result = cli(
        root,
        "run",
        "train",
        "--json",
        "-p",
        "depth=6",
        "-p",
        "rate=1",
        "-p",
        "early=yes",
        "-p",
        'grid={"b": [1, 2]}',
        "-p",
        "name=007",
        "-p",
        "algo=rf",
    )
    assert result.code == 0, result.err
    params = result.json()["params"]
    assert params == {
        "depth": 6,
        "rate": 1.0,
        "early": True,
        "grid": {"b": [1, 2]},
        "name": "007",
        "algo": "rf",
    }
    assert isinstance(params["rate"], float)
    assert isinstance(params["name"], str)
    # what the step saw: a boolean is written true/false, as in mixed text
    log = cli(root, "logs", str(result.json()["id"]), "fit")
    assert log.out.strip() == "6 1.0 true 007 rf"


def test_booleans_render_alike_in_argv_shell_and_env(tmp_path: Path, cli: Callable):
    root = write_project(
        tmp_path / "proj",
        """\
        pipelines:
          train:
            parameters: {flag: false}
            steps:
              plain:
                run: echo ${{ params.flag }} --x=${{ params.flag }}
              shell:
                run: echo "$FLAG" ${{ params.flag }} --x=${{ params.flag }} "$PAIR"
                shell: true
                env:
                  FLAG: ${{ params.flag }}
                  PAIR: ${{ params.flag }}-${{ params.flag }}
        """,
    )
    result = cli(root, "run", "train", "--json", "-p", "flag=on")
    assert result.code == 0, result.err
    run_id = str(result.json()["id"])
    assert cli(root, "logs", run_id, "plain").out.strip() == "true --x=true"
    assert cli(root, "logs", run_id, "shell").out.strip() == "true true --x=true true-true"


def test_value_with_an_equals_sign(root: Path, cli: Callable):
    result = cli(root, "run", "train", "--json", "-p", "name=a=b")
    assert result.code == 0, result.err
    assert result.json()["params"]["name"] == "a=b"


def test_run_of_an_invalid_project_records_nothing(
    tmp_path: Path, cli_process: Callable, cli: Callable, recorded_runs: Callable
):
    root = write_project(
        tmp_path / "proj",
        """\
        pipelines:
          train:
            steps:
              fit:
                run: python steps/fit.py
                ouputs: [model]
        """,
        {"steps/fit.py": "print('must not run')\n"},
    )
    result = cli_process(root, "run", "train")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert f"{root / 'modelyard.yaml'}:6: error: " in result.err
    assert "unknown key 'ouputs'" in result.err
    assert "must not run" not in result.out + result.err
    assert_nothing_recorded(root, cli, recorded_runs)


def test_run_of_a_project_with_lint_errors_records_nothing(
    tmp_path: Path, cli_process: Callable, cli: Callable, recorded_runs: Callable
):
    root = write_project(
        tmp_path / "proj",
        """\
        pipelines:
          train:
            steps:
              first:
                run: echo first > FIRST_RAN
                shell: true
              second:
                run: python steps/missing.py
                after: [first]
        """,
    )
    result = cli_process(root, "run", "train")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert "step 'second' runs 'steps/missing.py', which does not exist" in result.err
    assert not (root / "FIRST_RAN").exists()
    assert_nothing_recorded(root, cli, recorded_runs)


def test_run_of_a_file_with_a_yaml_error_records_nothing(
    tmp_path: Path, cli: Callable, recorded_runs: Callable
):
    root = write_project(tmp_path / "proj", "pipelines:\n  train:\n    steps: [a, b\n")
    result = cli(root, "run", "train")
    assert result.code == 2
    assert "YAML syntax error" in result.err
    assert_nothing_recorded(root, cli, recorded_runs)
