"""Lint rules on a pipeline (pure: no I/O). File checks live in `modelyard.project.checks`."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from modelyard.errors import ConfigError, ExpressionError
from modelyard.pipeline.dag import Dag, step_expressions
from modelyard.pipeline.expressions import Expression
from modelyard.pipeline.model import DEPLOY_VALUES, REGISTER_VALUES, Parameter, Pipeline, Step
from modelyard.pipeline.params import check_choice, coerce
from modelyard.pipeline.templates import has_templates, whole_template

if TYPE_CHECKING:
    from modelyard.pipeline.deployment import Deployment
    from modelyard.pipeline.registration import Registration

# Names an expression may start with, per field of a step.
_ROOTS = {
    "inputs": {"params", "steps", "data"},
    "params": {"params", "steps"},
    "env": {"params", "steps", "inputs", "outputs", "run"},
    "run": {"params", "steps", "inputs", "outputs", "run"},
    "fail": {"params", "steps", "run"},
    "approval": {"params", "steps", "run"},
    "condition": {"params", "steps", "run"},
    "register": {"params", "steps", "run"},
}
# Alias names that would make a model reference ambiguous: `NAME@latest` is the newest version.
RESERVED_ALIASES = frozenset({"latest"})
RUN_ATTRIBUTES = ("id", "pipeline", "project")


@dataclass(frozen=True)
class LintIssue:
    level: Literal["error", "warning"]
    path: tuple[str | int, ...]  # key path inside the pipeline, e.g. ("steps", "train", "inputs")
    message: str
    hint: str = ""


def lint_pipeline(pipeline: Pipeline, data_sources: Collection[str] = ()) -> list[LintIssue]:
    """Lint a pipeline; `data_sources` are the names declared under the project's data_sources."""
    issues: list[LintIssue] = []
    dag = Dag(pipeline)
    for param in pipeline.parameters.values():
        issues.extend(_lint_parameter(param))
    for index, source in enumerate(pipeline.data_triggers):
        if source not in data_sources:
            issues.append(_unknown_source(source, data_sources, ("triggers", "data", index)))
    used_outputs: set[tuple[str, str]] = set()
    for step in pipeline.steps.values():
        issues.extend(_lint_step(pipeline, step, used_outputs, data_sources))
    issues.extend(_lint_gates(pipeline, dag))
    cycle = dag.find_cycle()
    if cycle:
        issues.append(
            LintIssue(
                "error",
                ("steps", cycle[0]),
                "the steps form a cycle: " + " -> ".join(cycle),
                "a step cannot depend, directly or through others, on itself: "
                "remove one of these references",
            )
        )
    for step in pipeline.steps.values():
        for output in step.outputs:
            if (step.name, output) not in used_outputs:
                issues.append(
                    LintIssue(
                        "warning",
                        ("steps", step.name, "outputs"),
                        f"output '{output}' of step '{step.name}' is not used by any step",
                        "remove it, or reference it as ${{ steps."
                        f"{step.name}.outputs.{output} }}}} (final results are fine to keep)",
                    )
                )
    return issues


def _lint_parameter(param: Parameter) -> list[LintIssue]:
    if param.default is None:
        return []
    name, type_ = param.name, param.type
    try:
        check_choice(param, coerce(type_, param.default))
    except ValueError as exc:
        return [
            LintIssue(
                "error",
                ("parameters", name, "default"),
                f"default of parameter '{name}' does not fit its type {type_}: {exc}",
                f"change the default or the type of '{name}'",
            )
        ]
    return []


def _lint_step(
    pipeline: Pipeline,
    step: Step,
    used_outputs: set[tuple[str, str]],
    data_sources: Collection[str],
) -> list[LintIssue]:
    issues = []
    here = ("steps", step.name)
    for dep in step.after:
        if dep not in pipeline.steps:
            issues.append(_unknown_step(pipeline, dep, (*here, "after")))
        elif dep == step.name:
            issues.append(LintIssue("error", (*here, "after"), "a step cannot wait for itself"))
    if step.approves is not None:
        issues.extend(_lint_approves(pipeline, step, step.approves))
    try:
        expressions = list(step_expressions(step))
    except ExpressionError as exc:
        return [*issues, LintIssue("error", here, exc.message, exc.hint or "")]
    for field, expression in expressions:
        issues.extend(
            _lint_expression(pipeline, step, field, expression, used_outputs, data_sources)
        )
    if step.registration is not None:
        issues.extend(_lint_registration(step, step.registration))
    if step.deployment is not None:
        issues.extend(_lint_deployment(pipeline, step, step.deployment))
    for name, value in step.inputs.items():
        if has_templates(value) and whole_template(value) is None:
            issues.append(
                LintIssue(
                    "error",
                    (*here, "inputs", name),
                    f"input '{name}' mixes text and a reference",
                    "an input is either a project path or one reference such as "
                    "${{ steps.prepare.outputs.data }} or ${{ data.SOURCE }}",
                )
            )
    return issues


def _lint_expression(
    pipeline: Pipeline,
    step: Step,
    field: str,
    expression: Expression,
    used_outputs: set[tuple[str, str]],
    data_sources: Collection[str],
) -> list[LintIssue]:
    issues = []
    path = ("steps", step.name, field)
    allowed = _ROOTS[field]
    for ref in expression.references():
        root = str(ref[0])
        if root not in allowed:
            issues.append(
                LintIssue(
                    "error",
                    path,
                    f"'{root}' cannot be used in {field} of step '{step.name}'"
                    f" (in '{expression.text}')",
                    "use one of: " + ", ".join(sorted(allowed)),
                )
            )
            continue
        if root == "params" and len(ref) >= 2 and ref[1] not in pipeline.parameters:
            known = ", ".join(sorted(pipeline.parameters)) or "(none declared)"
            issues.append(
                LintIssue(
                    "error",
                    path,
                    f"unknown parameter '{ref[1]}' in '{expression.text}'",
                    f"declare it under parameters, or use one of: {known}",
                )
            )
        elif root == "inputs" and len(ref) >= 2 and ref[1] not in step.inputs:
            issues.append(_unknown_member("input", str(ref[1]), step.name, step.inputs, path))
        elif root == "outputs" and len(ref) >= 2 and ref[1] not in step.outputs:
            issues.append(_unknown_member("output", str(ref[1]), step.name, step.outputs, path))
        elif root == "run" and len(ref) >= 2 and ref[1] not in RUN_ATTRIBUTES:
            issues.append(
                _unknown_member("run attribute", str(ref[1]), "run", RUN_ATTRIBUTES, path)
            )
        elif root == "steps":
            issues.extend(_lint_step_reference(pipeline, step, ref, expression, path, used_outputs))
        elif root == "data":
            if len(ref) != 2:
                issues.append(
                    LintIssue(
                        "error",
                        path,
                        f"'{expression.text}': refer to a data source as data.NAME",
                        "write e.g. ${{ data.abalone }}: the step gets the data version's files",
                    )
                )
            elif ref[1] not in data_sources:
                issues.append(_unknown_source(str(ref[1]), data_sources, path))
    return issues


def _lint_step_reference(
    pipeline: Pipeline,
    step: Step,
    ref: tuple[str | int, ...],
    expression: Expression,
    path: tuple[str, ...],
    used_outputs: set[tuple[str, str]],
) -> list[LintIssue]:
    if len(ref) < 2:
        return [LintIssue("error", path, f"'{expression.text}' must name a step: steps.NAME...")]
    target_name = str(ref[1])
    target = pipeline.steps.get(target_name)
    if target is None:
        return [_unknown_step(pipeline, target_name, path)]
    if target_name == step.name:
        return [LintIssue("error", path, f"step '{step.name}' refers to itself")]
    if len(ref) < 4 or ref[2] not in ("outputs", "values"):
        return [
            LintIssue(
                "error",
                path,
                f"'{expression.text}': refer to steps.{target_name}.outputs.NAME"
                f" or steps.{target_name}.values.NAME",
            )
        ]
    member = str(ref[3])
    if ref[2] == "outputs":
        outputs = target.produced_outputs
        if member not in outputs:
            return [_unknown_member("output", member, target_name, outputs, path)]
        used_outputs.add((target_name, member))
        return []
    available = {
        "condition": ("result",),
        "register": REGISTER_VALUES,
        "deploy": DEPLOY_VALUES,
    }.get(target.kind, target.values)
    if member not in available:
        return [_unknown_member("value", member, target_name, available, path)]
    return []


def _lint_approves(pipeline: Pipeline, step: Step, target_name: str) -> list[LintIssue]:
    path = ("steps", step.name, "approval", "approves")
    target = pipeline.steps.get(target_name)
    if target is None:
        return [_unknown_step(pipeline, target_name, path)]
    if target.kind != "register":
        registers = [s.name for s in pipeline.steps.values() if s.kind == "register"]
        return [
            LintIssue(
                "error",
                path,
                f"'{target_name}' is a {target.kind} step: an approval approves the version of "
                "a register step",
                "name a register step: " + (", ".join(registers) or "(the pipeline has none)"),
            )
        ]
    alias = step.alias_on_approval
    if alias is not None and alias in RESERVED_ALIASES:
        return [
            LintIssue(
                "error",
                ("steps", step.name, "approval", "alias_on_approval"),
                f"'{alias}' cannot be an alias: NAME@{alias} means the newest version",
                "choose another alias name, such as champion",
            )
        ]
    return []


# Where each file source is written in the project file, below the step.
_FILE_KEYS = {
    "preprocessor": ("register", "package", "preprocessor"),
    "booster": ("register", "package", "model"),
    "mlflow_model": ("register", "mlflow_model"),
    "evidence": ("register", "evidence", "data"),
}


def _lint_registration(step: Step, registration: Registration) -> list[LintIssue]:
    from modelyard.registry.gates import known_direction

    issues = []
    here = ("steps", step.name)
    pipeline_package = registration.preprocessor is not None or registration.booster is not None
    if pipeline_package == (registration.mlflow_model is not None) or (
        pipeline_package and (registration.preprocessor is None or registration.booster is None)
    ):
        issues.append(
            LintIssue(
                "error",
                (*here, "register"),
                f"register step '{step.name}' needs either `package:` with a preprocessor and a "
                "model, or `mlflow_model:`",
                "give package: {preprocessor: ${{ steps.S.outputs.O }}, model: ...}, or "
                "mlflow_model: ${{ steps.S.outputs.O }} (a folder that is an MLflow model)",
            )
        )
    for key, source in registration.file_sources().items():
        path = (*here, *_FILE_KEYS[key])
        expression = whole_template(source) if has_templates(source) else None
        if has_templates(source) and expression is None:
            issues.append(
                LintIssue(
                    "error",
                    path,
                    f"'{source}' mixes text and a reference",
                    "write one reference such as ${{ steps.train.outputs.model }}, or a path "
                    "relative to the project folder",
                )
            )
            continue
        ref = expression.simple_reference() if expression is not None else None
        if expression is not None and (
            ref is None or len(ref) != 4 or ref[0] != "steps" or ref[2] != "outputs"
        ):
            issues.append(
                LintIssue(
                    "error",
                    path,
                    f"'{expression.text}' is not a step output",
                    "refer to an output folder: ${{ steps.STEP.outputs.NAME }}",
                )
            )
    if registration.approval_status not in ("pending", "approved"):
        issues.append(
            LintIssue(
                "error",
                (*here, "register", "approval_status"),
                f"approval_status '{registration.approval_status}' is not pending or approved",
                "a new version is pending (default) or approved; people reject versions later",
            )
        )
    alias = registration.alias_on_register
    if alias is not None and alias in RESERVED_ALIASES:
        issues.append(
            LintIssue(
                "error",
                (*here, "register", "alias_on_register"),
                f"'{alias}' cannot be an alias: NAME@{alias} means the newest version",
                "choose another alias name, such as champion or candidate",
            )
        )
    for index, rule in enumerate(registration.gate):
        rule_path: tuple[str | int, ...] = (*here, "register", "gate", index)
        if rule.metric not in registration.metrics:
            known = ", ".join(registration.metrics) or "(none declared)"
            issues.append(
                LintIssue(
                    "error",
                    rule_path,
                    f"gate rule on metric '{rule.metric}', which the step does not declare",
                    f"add it under metrics:, or use one of: {known}",
                )
            )
        thresholds = rule.min is not None or rule.max is not None
        if thresholds == (rule.better_than is not None):
            issues.append(
                LintIssue(
                    "error",
                    rule_path,
                    f"gate rule on '{rule.metric}' needs either min/max or better_than",
                    "write e.g. {metric: mse, max: 6.0} or "
                    "{metric: mse, better_than: champion, direction: lower}",
                )
            )
        if rule.direction is not None and rule.direction not in ("lower", "higher"):
            issues.append(
                LintIssue(
                    "error",
                    rule_path,
                    f"direction '{rule.direction}' is not lower or higher",
                    "say which values of the metric are better: lower or higher",
                )
            )
        elif (
            rule.better_than is not None
            and rule.direction is None
            and known_direction(rule.metric) is None
        ):
            issues.append(
                LintIssue(
                    "error",
                    rule_path,
                    f"gate rule: is a lower or a higher '{rule.metric}' better?",
                    "add direction: lower or direction: higher",
                )
            )
    return issues


def _lint_deployment(pipeline: Pipeline, step: Step, deployment: Deployment) -> list[LintIssue]:
    """The register step it deploys, the stage, the endpoint's name, and the autoscaling and
    rollout settings, checked by the very code that builds them when the step runs."""
    # the endpoint code (and SQLAlchemy with it) loads only for a pipeline that deploys
    from modelyard.serving.endpoint import deploy_step, service

    here = ("steps", step.name, "deploy")
    issues = []
    target = pipeline.steps.get(deployment.model)
    if target is None or target.kind != "register":
        registers = [s.name for s in pipeline.steps.values() if s.kind == "register"]
        what = "no step" if target is None else f"a {target.kind} step"
        issues.append(
            LintIssue(
                "error",
                (*here, "model"),
                f"deploy step '{step.name}': '{deployment.model}' is {what}: a deploy step "
                "deploys the version of a register step",
                "name a register step: " + (", ".join(registers) or "(the pipeline has none)"),
            )
        )
    if deployment.stage not in service.STAGES:
        issues.append(
            LintIssue(
                "error",
                (*here, "stage"),
                f"deploy step '{step.name}': unknown stage '{deployment.stage}'",
                "use one of: " + ", ".join(service.STAGES),
            )
        )
    checks: list[tuple[str, Callable[[], object]]] = [
        ("endpoint", lambda: service.check_name(deployment.endpoint)),
        ("autoscale", lambda: deploy_step.autoscale_policy(deployment)),
        ("rollout", lambda: deploy_step.rollout_plan(deployment)),
    ]
    for key, check in checks:
        try:
            check()
        except ConfigError as exc:
            path: tuple[str | int, ...] = (*here, key)
            message, hint = exc.message, exc.hint or ""
            if key == "rollout":
                path, message, hint = _rollout_key(path, message, hint)
            elif key == "autoscale" and "--" in hint:  # the CLI's syntax: say the file's
                hint = "e.g. autoscale: {min: 2, max: 10, target: 750, cooldown: 60s, window: 60s}"
            issues.append(LintIssue("error", path, f"deploy step '{step.name}': {message}", hint))
    if deployment.autoscale is not None and deployment.replicas is not None:
        issues.append(
            LintIssue(
                "warning",
                (*here, "replicas"),
                f"deploy step '{step.name}': replicas is ignored with autoscale",
                "autoscaling starts at its min replicas: remove replicas",
            )
        )
    return issues


# RolloutPlan names its fields as the CLI's flags; the project file has these keys.
_ROLLOUT_KEYS = {"bake_seconds": "bake"}


def _rollout_key(
    path: tuple[str | int, ...], message: str, hint: str
) -> tuple[tuple[str | int, ...], str, str]:
    """The rollout key a RolloutPlan message is about, and the message and hint in the file's
    terms rather than the CLI's flags."""
    from dataclasses import fields

    from modelyard.serving.endpoint.rollout import RolloutPlan

    for field in fields(RolloutPlan):
        flag = "--" + field.name.replace("_", "-")
        if flag in message:
            key = _ROLLOUT_KEYS.get(field.name, field.name)
            return (
                (*path, key),
                message.replace(flag, f"rollout.{key}"),
                hint.replace(f"{flag} ", f"{key}: "),
            )
    return path, message, hint


def _lint_gates(pipeline: Pipeline, dag: Dag) -> list[LintIssue]:
    issues = []
    for step in pipeline.steps.values():
        if step.kind != "condition":
            continue
        for branch, targets in (("then", step.then), ("else", step.otherwise)):
            for target in targets:
                if target not in pipeline.steps:
                    issues.append(_unknown_step(pipeline, target, ("steps", step.name, branch)))
        both = set(step.then) & set(step.otherwise)
        if both:
            issues.append(
                LintIssue(
                    "error",
                    ("steps", step.name),
                    f"step '{sorted(both)[0]}' is in both 'then' and 'else' of '{step.name}'",
                    "list each step in one branch only",
                )
            )
    for target, gates in dag.gates.items():
        # one condition listing a step in both branches is reported above
        if len({g.condition for g in gates}) > 1:
            conditions = ", ".join(dict.fromkeys(g.condition for g in gates))
            issues.append(
                LintIssue(
                    "error",
                    ("steps", target),
                    f"step '{target}' is chosen by more than one condition ({conditions})",
                    "let one condition choose it; chain conditions for combined checks",
                )
            )
    return issues


def _unknown_source(
    name: str, data_sources: Collection[str], path: tuple[str | int, ...]
) -> LintIssue:
    known = ", ".join(sorted(data_sources))
    return LintIssue(
        "error",
        path,
        f"unknown data source '{name}'",
        f"declare it under data_sources, or use one of: {known}"
        if known
        else "declare it under data_sources: {NAME: {url: FOLDER_OR_URL}}",
    )


def _unknown_step(pipeline: Pipeline, name: str, path: tuple[str, ...]) -> LintIssue:
    known = ", ".join(pipeline.steps)
    return LintIssue("error", path, f"unknown step '{name}'", f"the steps are: {known}")


def _unknown_member(
    what: str, name: str, owner: str, available: object, path: tuple[str, ...]
) -> LintIssue:
    names = ", ".join(available) if isinstance(available, tuple | list | dict) else ""
    return LintIssue(
        "error",
        path,
        f"step '{owner}' has no {what} '{name}'",
        f"declare it, or use one of: {names or '(none declared)'}",
    )
