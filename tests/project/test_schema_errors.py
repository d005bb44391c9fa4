"""Schema errors of modelyard.yaml: one located message per mistake (`modelyard.project.loader`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.errors import ConfigError, ProjectNotFound
from modelyard.project.loader import Problem, ProjectInvalid, load_project
from modelyard.project.schema import parse_duration
from modelyard.testing import write_project


def problems(root: Path) -> list[Problem]:
    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    assert info.value.exit_code == 2
    return info.value.problems


def only_problem(root: Path) -> Problem:
    found = problems(root)
    assert len(found) == 1, [str(p) for p in found]
    assert found[0].level == "error"
    return found[0]


def test_unknown_key_names_line_path_and_hint(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              prepare:
                run: echo hi
                ouputs: [data]
        """,
    )
    problem = only_problem(root)
    assert problem.where == f"{root / 'modelyard.yaml'}:6"
    assert "pipelines.train.steps.prepare.ouputs" in problem.message
    assert "unknown key 'ouputs'" in problem.message
    assert "spelling" in problem.hint


def test_unknown_top_level_and_pipeline_keys(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            step:
              a: {run: echo}
        endpoint: {}
        """,
    )
    found = {p.message: p.where for p in problems(root)}
    file = root / "modelyard.yaml"
    assert found["endpoint: unknown key 'endpoint'"] == f"{file}:5"
    assert found["pipelines.train.step: unknown key 'step'"] == f"{file}:3"


def test_step_without_a_kind(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              ok: {run: echo}
              prepare:
                description: forgot the command
        """,
    )
    problem = only_problem(root)
    assert problem.where.endswith("modelyard.yaml:5")
    assert problem.message.startswith("pipelines.train.steps.prepare: ")
    assert "exactly one of the keys: run, python, condition, fail, approval" in problem.message
    assert "run: python train.py" in problem.hint


def test_step_with_two_kinds(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              fit:
                run: python fit.py
                python: fit:main
        """,
    )
    problem = only_problem(root)
    assert problem.where.endswith("modelyard.yaml:4")
    assert "pipelines.train.steps.fit" in problem.message
    assert "exactly one of the keys" in problem.message


def test_error_inside_a_step_drops_the_kind_tag_from_the_path(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              fit:
                python: fit:main
                executor: thread
        """,
    )
    problem = only_problem(root)
    assert problem.where.endswith("modelyard.yaml:6")
    assert problem.message.startswith("pipelines.train.steps.fit.executor: ")
    assert ".python." not in problem.message


def test_parameter_default_of_the_wrong_type(tmp_path: Path):
    root = write_project(
        tmp_path,
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
    problem = only_problem(root)
    assert problem.where.endswith("modelyard.yaml:6")  # the line of `default:`
    assert "parameter 'epochs'" in problem.message
    assert "int" in problem.message
    assert "'five'" in problem.message
    assert "epochs" in problem.hint


def test_parameter_default_outside_its_choices(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            parameters:
              algo: {choices: [xgb, rf], default: svm}
            steps:
              fit: {run: "echo ${{ params.algo }}"}
        """,
    )
    problem = only_problem(root)
    assert problem.where.endswith("modelyard.yaml:4")
    assert "'svm' is not one of the allowed values: 'xgb', 'rf'" in problem.message


def test_unknown_parameter_type(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            parameters:
              depth: {type: integer, default: 3}
            steps:
              fit: {run: echo}
        """,
    )
    problem = only_problem(root)
    assert problem.where.endswith("modelyard.yaml:4")
    assert problem.message.startswith("pipelines.train.parameters.depth.type: ")


def test_bad_duration(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              fit:
                run: echo
                timeout: soon
        """,
    )
    problem = only_problem(root)
    assert problem.where.endswith("modelyard.yaml:6")
    assert problem.message.startswith("pipelines.train.steps.fit.timeout: ")
    assert "'soon' is not a duration" in problem.message
    assert "30s, 5m" in problem.message
    assert problem.hint


def test_bad_duration_in_retries_and_approval(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              fit:
                run: echo
                retries: {max: 2, backoff: a while}
              gate:
                approval: {message: ok?, timeout: -5m}
        """,
    )
    found = {p.message.split(":")[0]: p.where for p in problems(root)}
    assert found["pipelines.train.steps.fit.retries.backoff"].endswith(":6")
    assert found["pipelines.train.steps.gate.approval.timeout"].endswith(":8")


@pytest.mark.parametrize(
    ("snippet", "line", "path", "bad"),
    [
        ("steps:\n      bad name: {run: echo}", 4, "pipelines.train.steps.bad name", "bad name"),
        ("steps:\n      fit: {run: echo, outputs: [9lives]}", 4, "steps.fit.outputs.0", "9lives"),
        ("steps:\n      fit: {run: echo, after: [a.b]}", 4, "steps.fit.after.0", "a.b"),
    ],
)
def test_bad_names(tmp_path: Path, snippet: str, line: int, path: str, bad: str):
    root = write_project(tmp_path, f"pipelines:\n  train:\n    {snippet}\n")
    problem = only_problem(root)
    assert problem.where.endswith(f"modelyard.yaml:{line}")
    assert path in problem.message
    assert f"'{bad}' is not a valid value" in problem.message
    assert "letters, digits" in problem.hint


def test_bad_pipeline_name(tmp_path: Path):
    root = write_project(tmp_path, "pipelines:\n  2train:\n    steps: {a: {run: echo}}\n")
    problem = only_problem(root)
    assert problem.where.endswith("modelyard.yaml:2")
    assert "'2train' is not a valid value" in problem.message


def test_each_mistake_is_reported_once_with_its_own_line(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              a:
                run: echo
                timout: 5m
              b:
                run: ""
              c:
                run: echo
                cache: maybe
        """,
    )
    found = problems(root)
    assert [p.where.rsplit(":", 1)[1] for p in found] == ["6", "8", "11"]
    assert len({p.message for p in found}) == 3
    assert "the command is empty" in found[1].message


def test_empty_pipeline(tmp_path: Path):
    root = write_project(tmp_path, "pipelines:\n  train:\n    steps: {}\n")
    problem = only_problem(root)
    assert problem.where.endswith("modelyard.yaml:2")
    assert problem.message.startswith("pipelines.train: ")
    assert "at least one step" in problem.message


def test_problem_text_has_location_level_message_and_fix(tmp_path: Path):
    root = write_project(tmp_path, "pipelines:\n  train:\n    steps: {a: {run: echo, x: 1}}\n")
    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    text = str(info.value)
    assert text.startswith("the project is invalid (1 error):\n")
    assert f"{root / 'modelyard.yaml'}:3: error: pipelines.train.steps.a.x: unknown key 'x'" in text
    assert "\n  fix: " in text


def test_file_that_is_not_a_mapping(tmp_path: Path):
    root = write_project(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError) as info:
        load_project(root)
    assert info.value.where == f"{root / 'modelyard.yaml'}:1"
    assert "mapping" in info.value.message


def test_empty_file_is_a_project_without_pipelines(tmp_path: Path):
    root = write_project(tmp_path, "")
    project = load_project(root)
    assert project.pipelines == {}
    assert project.name == root.name


def test_project_is_found_from_a_subfolder(tmp_path: Path):
    root = write_project(tmp_path / "proj", "name: demo\n")
    (root / "src" / "deep").mkdir(parents=True)
    project = load_project(root / "src" / "deep")
    assert project.root == root.resolve()
    assert project.name == "demo"


def test_no_project_file(tmp_path: Path):
    with pytest.raises(ProjectNotFound) as info:
        load_project(tmp_path)
    assert "modelyard init" in (info.value.hint or "")


def test_unknown_pipeline_lists_the_known_ones(tmp_path: Path):
    root = write_project(
        tmp_path, "pipelines:\n  train: {steps: {a: {run: echo}}}\n  ship: {steps: {b: {run: x}}}\n"
    )
    project = load_project(root, check_paths=False)
    with pytest.raises(ConfigError) as info:
        project.pipeline("deploy")
    assert "no pipeline named 'deploy'" in info.value.message
    assert info.value.hint == "the pipelines are: train, ship"


def test_valid_project_compiles_shorthands(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        name: demo
        pipelines:
          train:
            parameters:
              depth: 5
              rate: {type: float, default: 1}
            steps:
              fit:
                run: [python, -c, "print(1)"]
                retries: 3
                timeout: 1.5m
              ask:
                approval: Ship it?
                after: [fit]
        """,
    )
    project = load_project(root)
    pipeline = project.pipeline("train")
    assert pipeline.parameters["depth"].type == "int"
    assert pipeline.parameters["depth"].default == 5
    assert pipeline.parameters["rate"].type == "float"
    fit = pipeline.steps["fit"]
    assert fit.command == ("python", "-c", "print(1)")
    assert fit.retry.max == 3
    assert fit.timeout == 90.0
    ask = pipeline.steps["ask"]
    assert ask.kind == "approval"
    assert ask.message == "Ship it?"
    assert ask.after == ("fit",)
    assert project.warnings == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("5m", 300.0), ("1.5h", 5400.0), ("2d", 172800.0), ("250ms", 0.25), (7, 7.0)],
)
def test_parse_duration(text: object, seconds: float):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "5 minutes", "", True, "-3s", -1])
def test_parse_duration_refuses(text: object):
    with pytest.raises(ValueError):
        parse_duration(text)
