"""Lint rules on the pure pipeline model (`modelyard.pipeline.lint`)."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.pipeline.lint import LintIssue, lint_pipeline
from modelyard.pipeline.model import Parameter, Pipeline, Step


def run(name: str, command: str = "echo", **fields: Any) -> Step:
    return Step(name=name, kind="run", command=command, **fields)


def condition(name: str, expression: str, then=(), otherwise=(), **fields: Any) -> Step:
    return Step(
        name=name,
        kind="condition",
        condition=expression,
        then=tuple(then),
        otherwise=tuple(otherwise),
        **fields,
    )


def pipeline(*steps: Step, **parameters: Parameter) -> Pipeline:
    return Pipeline(name="train", steps={s.name: s for s in steps}, parameters=parameters)


def errors(p: Pipeline) -> list[LintIssue]:
    return [i for i in lint_pipeline(p) if i.level == "error"]


def only_error(p: Pipeline) -> LintIssue:
    found = errors(p)
    assert len(found) == 1, found
    return found[0]


def test_clean_pipeline_has_no_issues():
    p = pipeline(
        run("prepare", "python prep.py --out ${{ outputs.data }}", outputs=("data",)),
        run(
            "fit",
            "python fit.py --data ${{ inputs.data }} --depth ${{ params.depth }}",
            inputs={"data": "${{ steps.prepare.outputs.data }}"},
            values=("score",),
        ),
        condition("good", "steps.fit.values.score > 0.5", then=["ship"]),
        run("ship", "echo ${{ run.id }}"),
        depth=Parameter("depth", "int", default=3),
    )
    assert lint_pipeline(p) == []


def test_cycle_through_references_shows_the_path():
    p = pipeline(
        run("a", "echo ${{ steps.b.outputs.x }}", outputs=("y",)),
        run("b", "echo ${{ steps.a.outputs.y }}", outputs=("x",)),
    )
    issue = only_error(p)
    assert issue.message == "the steps form a cycle: a -> b -> a"
    assert issue.path == ("steps", "a")
    assert "remove one of these references" in issue.hint


def test_cycle_through_after():
    p = pipeline(run("a", after=("c",)), run("b", after=("a",)), run("c", after=("b",)))
    issue = only_error(p)
    assert issue.message == "the steps form a cycle: a -> c -> b -> a"


def test_cycle_through_a_gate():
    p = pipeline(
        condition("gate", "steps.fit.values.ok", then=["fit"]),
        run("fit", values=("ok",)),
    )
    issue = only_error(p)
    assert "cycle" in issue.message
    assert "gate" in issue.message
    assert "fit" in issue.message


def test_step_waiting_for_itself():
    issues = errors(pipeline(run("a", after=("a",))))
    messages = [i.message for i in issues]
    assert "a step cannot wait for itself" in messages
    assert all(i.path[:2] == ("steps", "a") for i in issues)


def test_unknown_step_in_after():
    issue = only_error(pipeline(run("a"), run("b", after=("a", "ghost"))))
    assert issue.message == "unknown step 'ghost'"
    assert issue.path == ("steps", "b", "after")
    assert issue.hint == "the steps are: a, b"


def test_unknown_step_in_a_reference():
    issue = only_error(pipeline(run("a", "echo ${{ steps.nope.outputs.x }}")))
    assert issue.message == "unknown step 'nope'"
    assert issue.path == ("steps", "a", "run")


@pytest.mark.parametrize("branch", ["then", "otherwise"])
def test_unknown_step_in_a_condition_branch(branch: str):
    gate = condition("gate", "params.go", **{branch: ["missing"]})
    issue = only_error(pipeline(gate, go=Parameter("go", "bool", default=True)))
    assert issue.message == "unknown step 'missing'"
    assert issue.path == ("steps", "gate", "then" if branch == "then" else "else")


def test_unknown_output_of_a_known_step():
    issue = only_error(
        pipeline(
            run("a", "echo ${{ outputs.y }}", outputs=("y", "z")),
            run("b", "echo ${{ steps.a.outputs.zz }} ${{ steps.a.outputs.y }}"),
        )
    )
    assert issue.message == "step 'a' has no output 'zz'"
    assert issue.path == ("steps", "b", "run")
    assert issue.hint == "declare it, or use one of: y, z"


def test_unknown_value_of_a_known_step():
    issue = only_error(
        pipeline(run("a", values=("score",)), run("b", "echo ${{ steps.a.values.loss }}"))
    )
    assert issue.message == "step 'a' has no value 'loss'"
    assert "score" in issue.hint


def test_condition_steps_have_the_value_result():
    good = pipeline(condition("gate", "1 > 0"), run("b", "echo ${{ steps.gate.values.result }}"))
    assert errors(good) == []
    bad = pipeline(condition("gate", "1 > 0"), run("b", "echo ${{ steps.gate.values.ok }}"))
    assert only_error(bad).message == "step 'gate' has no value 'ok'"


def test_reference_to_a_step_must_name_outputs_or_values():
    issue = only_error(pipeline(run("a", values=("v",)), run("b", "echo ${{ steps.a.v }}")))
    assert "steps.a.outputs.NAME" in issue.message


def test_step_referring_to_itself():
    issues = errors(pipeline(run("a", "echo ${{ steps.a.values.v }}", values=("v",))))
    assert "step 'a' refers to itself" in [i.message for i in issues]


def test_unknown_parameter_lists_the_known_ones():
    p = pipeline(
        run("a", "echo ${{ params.depht }}"),
        depth=Parameter("depth", "int", default=3),
        rate=Parameter("rate", "float", default=0.1),
    )
    issue = only_error(p)
    assert issue.message == "unknown parameter 'depht' in 'params.depht'"
    assert issue.hint == "declare it under parameters, or use one of: depth, rate"


def test_unknown_parameter_without_any_declared():
    issue = only_error(pipeline(run("a", env={"X": "${{ params.x }}"})))
    assert issue.path == ("steps", "a", "env")
    assert "(none declared)" in issue.hint


def test_undeclared_input():
    issue = only_error(pipeline(run("a", "cat ${{ inputs.data }}")))
    assert issue.message == "step 'a' has no input 'data'"
    assert issue.hint == "declare it, or use one of: (none declared)"


def test_undeclared_output_in_own_command():
    issue = only_error(pipeline(run("a", "echo ${{ outputs.model }}")))
    assert issue.message == "step 'a' has no output 'model'"


def test_unknown_run_attribute():
    issue = only_error(pipeline(run("a", "echo ${{ run.owner }}")))
    assert issue.message == "step 'run' has no run attribute 'owner'"
    assert "id, pipeline, project" in issue.hint


def test_root_not_allowed_in_a_field():
    # a condition cannot look at a compute step's own inputs
    issue = only_error(pipeline(condition("gate", "inputs.x > 1")))
    assert "'inputs' cannot be used in condition of step 'gate'" in issue.message
    assert issue.hint == "use one of: params, run, steps"


def test_input_mixing_text_and_reference():
    p = pipeline(
        run("a", outputs=("data",)),
        run("b", inputs={"data": "${{ steps.a.outputs.data }}/train.csv"}),
    )
    issue = only_error(p)
    assert issue.message == "input 'data' mixes text and a reference"
    assert issue.path == ("steps", "b", "inputs", "data")


def test_input_with_two_references_is_not_taken_for_one():
    p = pipeline(
        run("a", outputs=("x", "y")),
        run("b", inputs={"data": "${{ steps.a.outputs.x }}${{ steps.a.outputs.y }}"}),
    )
    issue = only_error(p)
    assert issue.message == "input 'data' mixes text and a reference"


def test_unused_output_is_a_warning():
    p = pipeline(
        run("a", "echo ${{ outputs.data }} ${{ outputs.extra }}", outputs=("data", "extra")),
        run("b", inputs={"d": "${{ steps.a.outputs.data }}"}),
    )
    issues = lint_pipeline(p)
    assert [(i.level, i.message) for i in issues] == [
        ("warning", "output 'extra' of step 'a' is not used by any step")
    ]
    assert issues[0].path == ("steps", "a", "outputs")
    assert "${{ steps.a.outputs.extra }}" in issues[0].hint


def test_step_in_both_then_and_else_is_one_error():
    p = pipeline(condition("gate", "1 > 0", then=["a"], otherwise=["a"]), run("a"))
    issue = only_error(p)
    assert issue.message == "step 'a' is in both 'then' and 'else' of 'gate'"
    assert issue.path == ("steps", "gate")


def test_step_chosen_by_two_conditions():
    p = pipeline(
        condition("first", "1 > 0", then=["a"]),
        condition("second", "1 > 0", otherwise=["a"]),
        run("a"),
    )
    issue = only_error(p)
    assert issue.message == "step 'a' is chosen by more than one condition (first, second)"
    assert issue.path == ("steps", "a")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo ${{ params.x", "'${{' is not closed"),
        ("echo ${{ params.x + }}", "invalid expression"),
        ("echo ${{ }}", "empty ${{ }}"),
    ],
)
def test_malformed_expression_is_an_issue_not_an_exception(command: str, expected: str):
    p = pipeline(run("a", command), run("b", after=("a",)), x=Parameter("x", "int", default=1))
    issue = only_error(p)
    assert expected in issue.message
    assert issue.path == ("steps", "a")
    assert "fix:" not in issue.message  # the hint is separate, not repeated in the message
    assert issue.hint


def test_malformed_condition():
    issue = only_error(pipeline(condition("gate", "steps.a.values.x >")))
    assert "invalid expression" in issue.message
    assert issue.path == ("steps", "gate")


def test_parameter_default_must_fit_its_type_and_choices():
    p = pipeline(
        run("a"),
        n=Parameter("n", "int", default="five"),
        ok=Parameter("ok", "bool", default="maybe"),
        algo=Parameter("algo", "str", default="svm", choices=("xgb", "rf")),
        depth=Parameter("depth", "int", default=3, choices=(3, 5)),
        empty=Parameter("empty", "int", required=True),
    )
    found = {i.path: i.message for i in errors(p)}
    assert set(found) == {
        ("parameters", "n", "default"),
        ("parameters", "ok", "default"),
        ("parameters", "algo", "default"),
    }
    assert (
        "does not fit its type int: expected an integer, got 'five'"
        in found[("parameters", "n", "default")]
    )
