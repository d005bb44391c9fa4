"""Lint rules on a pipeline (pure: no I/O). File checks live in `modelyard.project.checks`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from modelyard.errors import ExpressionError
from modelyard.pipeline.dag import Dag, step_expressions
from modelyard.pipeline.expressions import Expression
from modelyard.pipeline.model import Parameter, Pipeline, Step
from modelyard.pipeline.params import check_choice, coerce
from modelyard.pipeline.templates import has_templates, whole_template

# Names an expression may start with, per field of a step.
_ROOTS = {
    "inputs": {"params", "steps", "data"},
    "params": {"params", "steps"},
    "env": {"params", "steps", "inputs", "outputs", "run"},
    "run": {"params", "steps", "inputs", "outputs", "run"},
    "fail": {"params", "steps", "run"},
    "approval": {"params", "steps", "run"},
    "condition": {"params", "steps", "run"},
}
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
    try:
        expressions = list(step_expressions(step))
    except ExpressionError as exc:
        return [*issues, LintIssue("error", here, exc.message, exc.hint or "")]
    for field, expression in expressions:
        issues.extend(
            _lint_expression(pipeline, step, field, expression, used_outputs, data_sources)
        )
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
        if member not in target.outputs:
            return [_unknown_member("output", member, target_name, target.outputs, path)]
        used_outputs.add((target_name, member))
        return []
    available = target.values if target.kind != "condition" else ("result",)
    if member not in available:
        return [_unknown_member("value", member, target_name, available, path)]
    return []


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
