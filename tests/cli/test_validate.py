"""`modelyard validate`: located errors without a traceback, warnings, --strict and --json."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.testing import write_project

SCHEMA_MISTAKES = {
    "unknown key": (
        """\
        pipelines:
          train:
            steps:
              prepare:
                run: echo hi
                ouputs: [data]
        """,
        6,
        "pipelines.train.steps.prepare.ouputs",
        "unknown key 'ouputs'",
    ),
    "no kind": (
        """\
        pipelines:
          train:
            steps:
              prepare:
                outputs: [data]
        """,
        4,
        "pipelines.train.steps.prepare",
        "a step needs exactly one of the keys",
    ),
    "two kinds": (
        """\
        pipelines:
          train:
            steps:
              ok: {run: echo}
              fit:
                run: python fit.py
                python: fit:main
        """,
        5,
        "pipelines.train.steps.fit",
        "a step needs exactly one of the keys",
    ),
    "bad duration": (
        """\
        pipelines:
          train:
            steps:
              fit:
                run: echo
                timeout: soon
        """,
        6,
        "pipelines.train.steps.fit.timeout",
        "'soon' is not a duration",
    ),
    "bad step name": (
        """\
        pipelines:
          train:
            steps:
              fit model: {run: echo}
        """,
        4,
        "pipelines.train.steps.fit model",
        "'fit model' is not a valid value",
    ),
    "bad output name": (
        """\
        pipelines:
          train:
            steps:
              fit:
                run: echo
                outputs:
                  - model
                  - 2nd-model
        """,
        8,
        "pipelines.train.steps.fit.outputs.1",
        "'2nd-model' is not a valid value",
    ),
}


@pytest.mark.parametrize("case", SCHEMA_MISTAKES)
def test_schema_mistake_gives_one_located_message(tmp_path: Path, cli_process: Callable, case: str):
    text, line, key_path, message = SCHEMA_MISTAKES[case]
    root = write_project(tmp_path / "proj", text)
    result = cli_process(root, "validate")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert result.out == ""
    assert result.err.startswith("error: the project is invalid (1 error):\n")
    location = f"{root / 'modelyard.yaml'}:{line}: error: "
    assert result.err.count(": error: ") == 1
    [located] = [row for row in result.err.splitlines() if row.startswith(location)]
    assert key_path in located
    assert message in located
    assert "\n  fix: " in result.err


def test_parameter_default_of_the_wrong_type(tmp_path: Path, cli_process: Callable):
    root = write_project(
        tmp_path / "proj",
        """\
        pipelines:
          train:
            parameters:
              epochs:
                type: int
                default: five
            steps:
              fit: {run: "echo ${{ params.epochs }}"}
        """,
    )
    result = cli_process(root, "validate")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert result.err.count(": error: ") == 1
    assert f"{root / 'modelyard.yaml'}:6: error: default of parameter 'epochs'" in result.err
    assert "expected an integer, got 'five'" in result.err
    assert "fix: change the default or the type of 'epochs'" in result.err


def test_yaml_syntax_error(tmp_path: Path, cli_process: Callable):
    root = write_project(tmp_path / "proj", "pipelines:\n  train:\n    steps: [\n  x: 1\n")
    result = cli_process(root, "validate")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert result.err.startswith(f"error: {root / 'modelyard.yaml'}:")
    assert "YAML syntax error" in result.err


def test_duplicate_step_names(tmp_path: Path, cli_process: Callable):
    root = write_project(
        tmp_path / "proj",
        """\
        pipelines:
          train:
            steps:
              fit: {run: echo 1}
              fit: {run: echo 2}
        """,
    )
    result = cli_process(root, "validate")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert f"{root / 'modelyard.yaml'}:5: duplicate key 'fit' (first defined on line 4)" in (
        result.err
    )


def test_python_step_checked_without_importing_its_module(tmp_path: Path, cli_process: Callable):
    root = write_project(
        tmp_path / "proj",
        """\
        pipelines:
          train:
            steps:
              fit: {python: "jobs:train"}
              other: {python: "pkg.gone:train"}
        """,
        {
            "jobs.py": "open('IMPORTED', 'w').write('x')\nraise SystemExit(9)\n",
            "pkg/__init__.py": "open('IMPORTED', 'w').write('x')\nraise SystemExit(9)\n",
        },
    )
    # run from the project folder, so `pkg` is importable from the current directory
    done = subprocess.run(
        [sys.executable, "-m", "modelyard", "validate"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "step 'fit': 'train' is not defined in" in done.stderr
    assert "step 'other': module 'pkg.gone' not found" in done.stderr
    assert not (root / "IMPORTED").exists()


def test_lint_errors_exit_2(tmp_path: Path, cli: Callable):
    root = write_project(
        tmp_path / "proj",
        """\
        pipelines:
          train:
            steps:
              a: {run: "echo ${{ steps.b.values.x }}", values: [y]}
              b: {run: "echo ${{ steps.a.values.y }}", values: [x]}
              c: {run: python steps/missing.py}
        """,
    )
    result = cli(root, "validate")
    assert result.code == 2
    assert "the project is invalid (2 errors)" in result.err
    assert "the steps form a cycle: a -> b -> a" in result.err
    assert "step 'c' runs 'steps/missing.py', which does not exist" in result.err


UNUSED_OUTPUT = """\
pipelines:
  train:
    steps:
      a:
        run: echo ${{ outputs.data }}
        outputs: [data]
"""


def test_unused_output_is_a_warning(tmp_path: Path, cli: Callable):
    root = write_project(tmp_path / "proj", UNUSED_OUTPUT)
    result = cli(root, "validate")
    assert result.code == 0
    assert f"{root / 'modelyard.yaml'}:6: warning: output 'data' of step 'a'" in result.out
    assert "valid (1 pipelines, 1 steps, 1 warnings)" in result.out


def test_strict_turns_warnings_into_a_failure(tmp_path: Path, cli: Callable):
    root = write_project(tmp_path / "proj", UNUSED_OUTPUT)
    assert cli(root, "validate", "--strict").code == 2
    result = cli(root, "validate", "--strict", "--json")
    assert result.code == 2
    data = result.json()
    assert data["valid"] is False
    assert [p["level"] for p in data["problems"]] == ["warning"]


def test_json_of_a_valid_project(tmp_path: Path, cli: Callable):
    root = write_project(
        tmp_path / "proj",
        "name: demo\npipelines:\n  train: {steps: {a: {run: echo}, b: {run: echo}}}\n",
    )
    result = cli(root, "validate", "--json")
    assert result.code == 0
    assert result.json() == {
        "valid": True,
        "project": "demo",
        "pipelines": {"train": ["a", "b"]},
        "problems": [],
    }


def test_json_of_an_invalid_project(tmp_path: Path, cli: Callable):
    root = write_project(tmp_path / "proj", "pipelines:\n  t: {steps: {a: {run: echo, x: 1}}}\n")
    result = cli(root, "validate", "--json")
    assert result.code == 2
    assert result.json() == {
        "valid": False,
        "problems": [
            {
                "level": "error",
                "where": f"{root / 'modelyard.yaml'}:2",
                "message": "pipelines.t.steps.a.x: unknown key 'x'",
                "hint": "check the spelling; see the documented keys in the README",
            }
        ],
    }


def test_no_project(tmp_path: Path, cli: Callable):
    (tmp_path / "empty").mkdir()
    result = cli(tmp_path / "empty", "validate")
    assert result.code == 2
    assert "no modelyard.yaml in" in result.err
    assert "modelyard init" in result.err
