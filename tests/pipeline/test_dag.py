"""The DAG of a pipeline: dependencies, order, downstream, text rendering (`pipeline.dag`)."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.pipeline.dag import Dag, Gate, referenced_steps, step_expressions
from modelyard.pipeline.model import Pipeline, Step


def run(name: str, command: str = "echo", **fields: Any) -> Step:
    return Step(name=name, kind="run", command=command, **fields)


def pipeline(*steps: Step) -> Pipeline:
    return Pipeline(name="p", steps={s.name: s for s in steps})


# prepare -> fit (reference) -> check (condition on a value) -then-> register
#                                                            -else-> alert (fail)
# report waits for fit with `after`
ABALONE = pipeline(
    run("prepare", "python prep.py --out ${{ outputs.data }}", outputs=("data",)),
    run("report", "echo done", after=("fit",)),
    run(
        "fit",
        "python fit.py ${{ inputs.data }}",
        inputs={"data": "${{ steps.prepare.outputs.data }}"},
        values=("mse",),
    ),
    Step(
        name="check",
        kind="condition",
        condition="steps.fit.values.mse < 0.5",
        then=("register",),
        otherwise=("alert",),
    ),
    run("register", "echo ${{ steps.fit.values.mse }}"),
    Step(name="alert", kind="fail", message="mse too high: ${{ steps.fit.values.mse }}"),
)


def test_dependencies_from_references_after_and_gates():
    deps = Dag(ABALONE).dependencies
    assert deps == {
        "prepare": frozenset(),
        "report": frozenset({"fit"}),
        "fit": frozenset({"prepare"}),
        "check": frozenset({"fit"}),
        "register": frozenset({"fit", "check"}),
        "alert": frozenset({"fit", "check"}),
    }


def test_dependents():
    down = Dag(ABALONE).dependents
    assert down["prepare"] == {"fit"}
    assert down["fit"] == {"report", "check", "register", "alert"}
    assert down["register"] == frozenset()


def test_gates():
    gates = Dag(ABALONE).gates
    assert gates == {"register": [Gate("check", "then")], "alert": [Gate("check", "else")]}


def test_order_is_topological_and_follows_the_file():
    order = Dag(ABALONE).order
    assert order == ["prepare", "fit", "report", "check", "register", "alert"]
    position = {name: i for i, name in enumerate(order)}
    for name, deps in Dag(ABALONE).dependencies.items():
        assert all(position[d] < position[name] for d in deps)


def test_independent_steps_keep_the_file_order():
    p = pipeline(run("c"), run("a"), run("b"))
    assert Dag(p).order == ["c", "a", "b"]


def test_order_with_a_cycle_raises():
    p = pipeline(run("a", after=("b",)), run("b", after=("a",)))
    with pytest.raises(ValueError, match="cycle"):
        _ = Dag(p).order


def test_unknown_dependencies_are_kept_but_do_not_block_the_order():
    p = pipeline(run("a", after=("ghost",)))
    dag = Dag(p)
    assert dag.dependencies["a"] == {"ghost"}
    assert dag.order == ["a"]
    assert dag.find_cycle() is None


def test_downstream():
    dag = Dag(ABALONE)
    assert dag.downstream("prepare") == {"fit", "report", "check", "register", "alert"}
    assert dag.downstream("check") == {"register", "alert"}
    assert dag.downstream("report") == set()
    assert dag.downstream("nope") == set()


def test_find_cycle():
    assert Dag(ABALONE).find_cycle() is None
    p = pipeline(
        run("a"),
        run("b", "echo ${{ steps.d.values.v }}", after=("a",), values=("w",)),
        run("c", "echo ${{ steps.b.values.w }}", values=("x",)),
        run("d", after=("c",), values=("v",)),
    )
    assert Dag(p).find_cycle() == ["b", "d", "c", "b"]


def test_render_text():
    assert Dag(ABALONE).render_text() == "\n".join(
        [
            "prepare",
            "fit  <- prepare",
            "report  <- fit",
            "check  <- fit",
            "register  <- check, fit  [if check:then]",
            "alert  <- check, fit  [if check:else]",
        ]
    )


def test_step_expressions_by_field():
    fields = [(f, e.text) for f, e in step_expressions(ABALONE.steps["fit"])]
    assert fields == [("inputs", "steps.prepare.outputs.data"), ("run", "inputs.data")]
    assert [(f, e.text) for f, e in step_expressions(ABALONE.steps["alert"])] == [
        ("fail", "steps.fit.values.mse")
    ]
    assert [f for f, _ in step_expressions(ABALONE.steps["check"])] == ["condition"]


def test_referenced_steps():
    assert referenced_steps(ABALONE.steps["register"]) == {"fit"}
    approval = Step(name="ok", kind="approval", message="mse ${{ steps.fit.values.mse }}, ship?")
    assert referenced_steps(approval) == {"fit"}
    listed = run("l", ("python", "x.py", "${{ steps.a.outputs.o }}"))
    assert referenced_steps(listed) == {"a"}


def test_referenced_steps_ignores_a_malformed_expression():
    # lint reports it with its location; the DAG must not fail on it
    step = run("bad", "echo ${{ steps.a.outputs.x")
    assert referenced_steps(step) == set()
    assert Dag(pipeline(run("a"), step)).find_cycle() is None
