"""Lint and file checks of a project, located at file:line (`loader` + `project.checks`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelyard.pipeline.model import Step
from modelyard.project.checks import module_file, script_paths
from modelyard.project.loader import Problem, ProjectInvalid, load_project
from modelyard.testing import write_project


def problems(root: Path) -> list[Problem]:
    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    return info.value.problems


def only_problem(root: Path) -> Problem:
    found = problems(root)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def line(problem: Problem) -> int:
    return int(problem.where.rsplit(":", 1)[1])


def test_cycle_is_located_at_its_first_step(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              a:
                run: echo ${{ steps.b.outputs.x }}
                outputs: [y]
              b:
                run: echo ${{ steps.a.outputs.y }}
                outputs: [x]
        """,
    )
    problem = only_problem(root)
    assert problem.message == "the steps form a cycle: a -> b -> a"
    assert line(problem) == 4


def test_reference_errors_point_at_their_keys(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            parameters:
              depth: 3
            steps:
              a:
                run: echo
                values: [score]
              b:
                after: [a, ghost]
                run: >-
                  echo ${{ steps.nope.outputs.x }} ${{ steps.a.values.loss }}
                  ${{ params.dpeth }} ${{ inputs.data }}
              gate:
                condition: steps.a.values.score > 0.5
                then: [missing]
        """,
    )
    found = {p.message: line(p) for p in problems(root)}
    assert found == {
        "unknown step 'ghost'": 10,
        "unknown step 'nope'": 11,
        "step 'a' has no value 'loss'": 11,
        "unknown parameter 'dpeth' in 'params.dpeth'": 11,
        "step 'b' has no input 'data'": 11,
        "unknown step 'missing'": 16,
    }


def test_step_in_both_branches(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              gate:
                condition: "1 > 0"
                then: [ship]
                else: [ship]
              ship: {run: echo}
        """,
    )
    problem = only_problem(root)
    assert problem.message == "step 'ship' is in both 'then' and 'else' of 'gate'"
    assert line(problem) == 4


def test_malformed_template_is_located(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              first: {run: echo}
              second:
                run: echo ${{ steps.first.outputs.x
        """,
    )
    problem = only_problem(root)
    assert line(problem) == 5
    assert "'${{' is not closed" in problem.message


def test_two_templates_in_one_env_value_are_valid(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            parameters: {a: x, b: y}
            steps:
              s:
                run: echo
                env:
                  NAME: ${{ params.a }}-${{ params.b }}
        """,
    )
    assert load_project(root).pipelines["train"].steps["s"].env == {
        "NAME": "${{ params.a }}-${{ params.b }}"
    }


def test_unused_output_is_a_warning_not_an_error(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              a:
                run: echo ${{ outputs.data }}
                outputs: [data]
        """,
    )
    project = load_project(root)
    [warning] = project.warnings
    assert warning.level == "warning"
    assert warning.message == "output 'data' of step 'a' is not used by any step"
    assert line(warning) == 6
    assert str(warning).startswith(f"{root / 'modelyard.yaml'}:6: warning: ")


def test_warnings_are_listed_with_errors(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              a:
                run: echo ${{ outputs.data }} ${{ params.nope }}
                outputs: [data]
        """,
    )
    found = problems(root)
    assert sorted(p.level for p in found) == ["error", "warning"]
    with pytest.raises(ProjectInvalid, match=r"\(1 error\)"):
        load_project(root)


# --- checks that need the project's files ---


def test_missing_script(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              fit:
                run: python steps/missing.py --depth 3
        """,
    )
    problem = only_problem(root)
    assert problem.message == "step 'fit' runs 'steps/missing.py', which does not exist"
    assert line(problem) == 5
    assert "create the script" in problem.hint


def test_missing_script_under_workdir(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              fit:
                run: [bash, train.sh]
                workdir: jobs
        """,
        {"train.sh": "echo wrong folder\n"},
    )
    problem = only_problem(root)
    assert "runs 'jobs/train.sh', which does not exist" in problem.message
    assert "workdir 'jobs'" in problem.hint


def test_existing_scripts_pass_and_are_found(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              fit:
                run: python steps/fit.py --config conf/x.yaml --out ${{ outputs.model }}
                outputs: [model]
        """,
        {"steps/fit.py": "print(1)\n", "conf/x.yaml": "a: 1\n"},
    )
    project = load_project(root)
    step = project.pipelines["train"].steps["fit"]
    # the script, and a project file that is named with a folder
    assert script_paths(step, root) == ["steps/fit.py", "conf/x.yaml"]


def test_tools_outside_the_project_are_not_scripts(tmp_path: Path):
    step = Step(name="s", kind="run", command="/usr/bin/env python -c 'print(1)'")
    assert script_paths(step, tmp_path) == []


def test_missing_code_path(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              fit:
                run: echo
                code: [src/lib, setup.cfg]
        """,
        {"setup.cfg": "[x]\n"},
    )
    problem = only_problem(root)
    assert problem.message == "code path 'src/lib' of step 'fit' does not exist"
    assert line(problem) == 6


def test_missing_input_path(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              fit:
                run: cat ${{ inputs.data }} ${{ inputs.present }}
                inputs:
                  present: data/here.csv
                  data: data/train.csv
        """,
        {"data/here.csv": "a\n"},
    )
    problem = only_problem(root)
    assert problem.message == "input 'data' of step 'fit': path 'data/train.csv' does not exist"
    assert line(problem) == 8


def test_file_checks_can_be_skipped(tmp_path: Path):
    root = write_project(
        tmp_path,
        "pipelines:\n  train:\n    steps:\n      fit: {run: python nothere.py, code: [x]}\n",
    )
    assert "fit" in load_project(root, check_paths=False).pipelines["train"].steps


def test_missing_lock_file(tmp_path: Path):
    root = write_project(
        tmp_path,
        "environment: {lock: requirements.lock}\npipelines:\n  t: {steps: {a: {run: echo}}}\n",
    )
    problem = only_problem(root)
    assert "lock file 'requirements.lock' does not exist" in problem.message
    assert line(problem) == 1


# --- python steps: checked by reading the module, never by importing it ---

EXPLOSIVE = """\
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("imported")
raise RuntimeError("this module must not be imported by lint")

def train(data):
    return {"ok": True}

helper = train
from os.path import join as joined
"""


def python_project(tmp_path: Path, target: str, files: dict[str, str]) -> Path:
    return write_project(
        tmp_path,
        f"""\
        pipelines:
          train:
            steps:
              fit:
                python: {target}
        """,
        files,
    )


@pytest.mark.parametrize("name", ["train", "helper", "joined"])
def test_python_function_found_without_importing(tmp_path: Path, name: str):
    root = python_project(tmp_path, f"jobs:{name}", {"jobs.py": EXPLOSIVE})
    project = load_project(root)
    assert project.pipelines["train"].steps["fit"].function == f"jobs:{name}"
    assert not (root / "IMPORTED").exists()
    assert "jobs" not in sys.modules


def test_python_function_not_defined(tmp_path: Path):
    root = python_project(tmp_path, "jobs:evaluate", {"jobs.py": EXPLOSIVE})
    problem = only_problem(root)
    assert problem.message == f"step 'fit': 'evaluate' is not defined in {root / 'jobs.py'}"
    assert line(problem) == 5
    assert not (root / "IMPORTED").exists()


def test_python_function_in_a_package_module(tmp_path: Path):
    files = {"pkg/__init__.py": EXPLOSIVE, "pkg/sub/__init__.py": "", "pkg/sub/m.py": EXPLOSIVE}
    root = python_project(tmp_path, "pkg.sub.m:nope", files)
    assert "'nope' is not defined in" in only_problem(root).message
    assert not (root / "pkg" / "IMPORTED").exists()
    assert not (root / "pkg" / "sub" / "IMPORTED").exists()


def test_python_module_not_found(tmp_path: Path):
    root = python_project(tmp_path, "nosuchmodule_for_modelyard:train", {})
    problem = only_problem(root)
    assert problem.message == "step 'fit': module 'nosuchmodule_for_modelyard' not found"
    assert "project folder first" in problem.hint


def test_missing_submodule_of_an_importable_package_does_not_import_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # the package is importable (on sys.path), its submodule does not exist: finding that out
    # must not run the package's __init__.py
    root = python_project(tmp_path, "explosive_pkg_x.nothere:train", {})
    (tmp_path / "lib" / "explosive_pkg_x").mkdir(parents=True)
    (tmp_path / "lib" / "explosive_pkg_x" / "__init__.py").write_text(EXPLOSIVE)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    problem = only_problem(root)
    assert problem.message == "step 'fit': module 'explosive_pkg_x.nothere' not found"
    assert not (tmp_path / "lib" / "explosive_pkg_x" / "IMPORTED").exists()
    assert "explosive_pkg_x" not in sys.modules


def test_python_module_with_a_syntax_error(tmp_path: Path):
    root = python_project(tmp_path, "jobs:train", {"jobs.py": "def train(:\n    pass\n"})
    problem = only_problem(root)
    assert f"{root / 'jobs.py'}:1: syntax error" in problem.message


def test_module_file_finds_installed_modules_without_importing():
    assert module_file("json.decoder", Path("/nonexistent")) == Path(
        sys.modules["json"].__file__
    ).with_name("decoder.py")
    assert module_file("json.nothere", Path("/nonexistent")) is None
    assert module_file("json.decoder.deeper", Path("/nonexistent")) is None
    assert module_file("math", Path("/nonexistent")) is None  # built in: no source to read


def test_module_file_prefers_the_project(tmp_path: Path):
    (tmp_path / "json.py").write_text("def f(): pass\n")
    assert module_file("json", tmp_path) == tmp_path / "json.py"
