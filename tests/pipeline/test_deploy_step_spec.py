"""The `deploy:` step kind in the project file: schema, compilation and lint (no processes).

A deploy step compiles into a `Step` of kind `deploy` whose `Deployment` round-trips through JSON
(with the run's definition and the compiled-project cache); it depends on the register step it
deploys; mistakes are located at file:line, and lint's issues carry the key path below the step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard.pipeline.deployment import Deployment
from modelyard.pipeline.lint import LintIssue, lint_pipeline
from modelyard.pipeline.model import Pipeline, Retry, Step
from modelyard.project.compiler import compile_project
from modelyard.project.loader import Problem, ProjectInvalid, load_project
from modelyard.testing import write_project

HEAD = """\
pipelines:
  train:
    steps:
      make:
        run: python make.py ${{ outputs.model }}
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.make.outputs.model }}
      approve:
        approval:
          approves: register
"""  # 13 lines: a deploy step written below starts on line 14

FULL = (
    HEAD
    + """\
      ship:
        deploy:
          model: register
          endpoint: abalone-dev
          stage: dev
          autoscale: {min: 2, max: 10, target: 750, cooldown: 2m, window: 90s}
          rollout: {strategy: canary, canary_percent: 10, linear_step_percent: 25, bake: 1m,
                    max_error_rate: 0.05, max_p99_ms: 200, min_requests: 10}
          allow_unapproved: true
        after: [approve]
        timeout: 15m
        retries: 2
      tell:
        run: echo ${{ steps.ship.values.url }} ${{ steps.ship.values.outcome }}
"""
)


def write(tmp_path: Path, text: str) -> Path:
    return write_project(tmp_path, text, {"make.py": "print('model')\n"})


def line(problem: Problem) -> int:
    return int(problem.where.rsplit(":", 1)[1])


def compiled_issues(root: Path) -> tuple[list[LintIssue], list[Problem]]:
    """Lint's issues (with their key paths) and the same findings located in the file."""
    file = root / "modelyard.yaml"
    compiled = compile_project(root, file, file.read_text())
    return lint_pipeline(compiled.pipelines["train"]), compiled.problems


def test_a_deploy_step_compiles_and_round_trips_through_json(tmp_path: Path) -> None:
    root = write(tmp_path, FULL)
    pipeline = load_project(root).pipelines["train"]
    step = pipeline.steps["ship"]

    assert (step.kind, step.cache, step.timeout) == ("deploy", False, 900.0)
    assert step.retry == Retry(max=2)
    assert step.runs_a_process
    assert step.upstream == ("approve", "register")
    assert step.deployment == Deployment(
        model="register",
        endpoint="abalone-dev",
        stage="dev",
        autoscale={
            "min_replicas": 2,
            "max_replicas": 10,
            "target": 750.0,
            "scale_out_cooldown": 120.0,
            "scale_in_cooldown": 120.0,
            "window": 90.0,
        },
        rollout={
            "strategy": "canary",
            "canary_percent": 10.0,
            "linear_step_percent": 25.0,
            "bake_seconds": 60.0,
            "max_error_rate": 0.05,
            "max_p99_ms": 200.0,
            "min_requests": 10,
        },
        allow_unapproved=True,
    )
    again = Pipeline.from_json(json.loads(json.dumps(pipeline.to_json())))
    assert again == pipeline
    assert isinstance(again.steps["ship"].deployment, Deployment)
    assert Step.from_json(json.loads(json.dumps(step.to_json()))) == step
    # the compiled-project cache gives the same step back
    assert load_project(root).pipelines["train"] == pipeline
    assert (root / ".modelyard" / "project.json").is_file()


def test_only_the_required_keys_and_the_defaults(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        HEAD
        + """\
      ship:
        deploy: {model: register, endpoint: toy-dev, stage: prod}
""",
    )
    step = load_project(root).pipelines["train"].steps["ship"]
    assert step.deployment == Deployment(model="register", endpoint="toy-dev", stage="prod")
    assert step.upstream == ("register",)  # implied, like an approval's `approves:`
    assert (step.timeout, step.retry) == (None, Retry())


def test_the_rollout_plan_is_the_given_keys_over_the_stage_default(tmp_path: Path) -> None:
    from modelyard.serving.endpoint.deploy_step import autoscale_policy, rollout_plan

    prod = Deployment(model="r", endpoint="e", stage="prod", rollout={"min_requests": 4})
    plan = rollout_plan(prod)
    assert plan is not None
    assert (plan.strategy, plan.canary_percent, plan.bake_seconds, plan.min_requests) == (
        "canary",
        10.0,
        60.0,
        4,
    )
    linear = rollout_plan(Deployment("r", "e", "prod", rollout={"strategy": "linear"}))
    assert linear is not None and linear.strategy == "linear"
    assert rollout_plan(Deployment("r", "e", "dev")) is None  # the service's default
    assert autoscale_policy(Deployment("r", "e", "dev")) is None


def test_all_at_once_may_be_written_with_dashes(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        HEAD
        + """\
      ship:
        deploy:
          model: register
          endpoint: toy-dev
          stage: dev
          rollout: {strategy: all-at-once, ready_timeout: 2m}
""",
    )
    deployment = load_project(root).pipelines["train"].steps["ship"].deployment
    assert deployment is not None
    assert deployment.rollout == {"strategy": "all_at_once", "ready_timeout": 120.0}


DEPLOY = """\
      ship:
        deploy:
          model: {model}
          endpoint: {endpoint}
          stage: {stage}
          autoscale: {{min: {low}, max: 4, target: 60}}
          rollout: {{strategy: {strategy}}}
"""
GOOD = {"model": "register", "endpoint": "toy-dev", "stage": "dev", "low": 1, "strategy": "canary"}


@pytest.mark.parametrize(
    ("change", "key", "at", "message", "hint"),
    [
        (
            {"model": "regster"},
            "model",
            16,
            "deploy step 'ship': 'regster' is no step: a deploy step deploys the version of a "
            "register step",
            "name a register step: register",
        ),
        (
            {"model": "make"},
            "model",
            16,
            "deploy step 'ship': 'make' is a run step: a deploy step deploys the version of a "
            "register step",
            "name a register step: register",
        ),
        (
            {"stage": "staging"},
            "stage",
            18,
            "deploy step 'ship': unknown stage 'staging'",
            "use one of: dev, prod",
        ),
        (
            {"endpoint": "toy/dev"},
            "endpoint",
            17,
            "deploy step 'ship': 'toy/dev' is not a valid endpoint name",
            "starting with a letter or digit",
        ),
        (
            {"low": 5},
            "autoscale",
            19,
            "deploy step 'ship': autoscaling min 5, max 4: need 1 <= min <= max",
            "autoscale: {min: 2, max: 10, target: 750",
        ),
        (
            {"strategy": "blue_green"},
            ("rollout", "strategy"),
            20,
            "deploy step 'ship': rollout.strategy 'blue_green' is not a rollout strategy",
            "use one of: all_at_once, canary, linear",
        ),
    ],
)
def test_lint_errors_are_located_with_their_key_path(
    tmp_path: Path,
    change: dict[str, object],
    key: str | tuple[str, ...],
    at: int,
    message: str,
    hint: str,
) -> None:
    root = write(tmp_path, HEAD + DEPLOY.format(**(GOOD | change)))
    issues, located = compiled_issues(root)
    errors = [i for i in issues if i.level == "error"]
    assert len(errors) == 1, errors
    keys = key if isinstance(key, tuple) else (key,)
    assert errors[0].path == ("steps", "ship", "deploy", *keys)
    assert errors[0].message == message
    assert hint in errors[0].hint

    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    (problem,) = [p for p in info.value.problems if p.level == "error"]
    assert problem.where == f"{root / 'modelyard.yaml'}:{at}"
    assert problem.message == message
    assert [str(p) for p in located if p.level == "error"] == [str(problem)]


def test_the_same_deploy_step_without_mistakes_is_clean(tmp_path: Path) -> None:
    root = write(tmp_path, HEAD + DEPLOY.format(**GOOD))
    issues, _ = compiled_issues(root)
    assert issues == []
    load_project(root)


@pytest.mark.parametrize(
    ("rollout", "key", "message"),
    [
        ("{canary_percent: 150}", "canary_percent", "rollout.canary_percent 150.0 must be in"),
        ("{bake: 30s, max_error_rate: 2}", "max_error_rate", "rollout.max_error_rate 2.0 must"),
        ("{min_requests: 0}", "min_requests", "rollout.min_requests 0 must be a whole number"),
    ],
)
def test_rollout_values_are_checked_by_the_rollout_plan(
    tmp_path: Path, rollout: str, key: str, message: str
) -> None:
    text = HEAD + DEPLOY.format(**GOOD).replace("{strategy: canary}", rollout)
    issues, _ = compiled_issues(write(tmp_path, text))
    (issue,) = issues
    assert issue.path == ("steps", "ship", "deploy", "rollout", key)
    assert message in issue.message and "--" not in issue.message + issue.hint


def test_replicas_with_autoscale_is_a_warning(tmp_path: Path) -> None:
    text = HEAD + DEPLOY.format(**GOOD) + "          replicas: 3\n"
    project = load_project(write(tmp_path, text))
    (warning,) = project.warnings
    assert warning.level == "warning" and line(warning) == 21
    assert "replicas is ignored with autoscale" in warning.message


def test_later_steps_may_refer_to_a_deploy_steps_values_only(tmp_path: Path) -> None:
    root = write(tmp_path, FULL.replace("values.outcome", "values.port"))
    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    (problem,) = info.value.problems
    assert line(problem) == 27
    assert problem.message == "step 'ship' has no value 'port'"
    assert "endpoint, url, variant, model, version, outcome" in problem.hint


@pytest.mark.parametrize(
    ("body", "at", "expected"),
    [
        (
            "{model: register, stage: dev}",
            15,
            "pipelines.train.steps.ship.deploy.endpoint: missing key 'endpoint'",
        ),
        (
            "{model: register, endpoint: e, stage: dev, rollout: {bake: soon}}",
            15,
            "pipelines.train.steps.ship.deploy.rollout.bake: Value error, 'soon' is not a duration",
        ),
        (
            "{model: register, endpoint: e, stage: dev, autoscale: {min: 1, max: 2}}",
            15,
            "pipelines.train.steps.ship.deploy.autoscale.target: missing key 'target'",
        ),
        (
            "{model: register, endpoint: e, stage: dev, replicas: 0}",
            15,
            "pipelines.train.steps.ship.deploy.replicas: Input should be greater than or equal "
            "to 1",
        ),
        (
            "{model: register, endpoint: e, stage: dev, canary: 10}",
            15,
            "pipelines.train.steps.ship.deploy.canary: unknown key 'canary'",
        ),
    ],
)
def test_schema_errors_name_the_key_path_and_the_line(
    tmp_path: Path, body: str, at: int, expected: str
) -> None:
    root = write(tmp_path, HEAD + f"      ship:\n        deploy: {body}\n")
    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    (problem,) = info.value.problems
    assert line(problem) == at
    assert problem.message.startswith(expected), problem.message


def test_the_python_builder_makes_the_same_deploy_step_as_the_yaml(tmp_path: Path) -> None:
    from modelyard.pipeline.builder import PipelineBuilder

    from_yaml = load_project(write(tmp_path, FULL)).pipelines["train"].steps["ship"]
    builder = PipelineBuilder("train")
    builder.run("make", "python make.py ${{ outputs.model }}", outputs=["model"])
    register = builder.register("register", "toy", mlflow_model="${{ steps.make.outputs.model }}")
    builder.approval("approve", approves=register)
    assert from_yaml.deployment is not None
    ship = builder.deploy(
        "ship",
        register,
        endpoint="abalone-dev",
        stage="dev",
        autoscale=from_yaml.deployment.autoscale,
        rollout=from_yaml.deployment.rollout,
        allow_unapproved=True,
        retries=2,
        timeout=900.0,
        after=["approve"],
    )
    assert builder.build().steps["ship"] == from_yaml
    assert ship.values.url == "${{ steps.ship.values.url }}"
