"""Gate rules (pure): thresholds, comparisons with a champion, directions, and their wording;
and the register step's definition: schema, lint, the Python builder, and its JSON round trip."""

from __future__ import annotations

import pytest

from modelyard.pipeline.builder import PipelineBuilder
from modelyard.pipeline.lint import lint_pipeline
from modelyard.pipeline.model import Pipeline
from modelyard.pipeline.registration import GateRule, PackageFile
from modelyard.registry.gates import (
    Champion,
    ResolvedRule,
    evaluate_gate,
    known_direction,
    resolve_rules,
)

CHAMPION = {"champion": Champion("champion", 3, {"mse": 5.0, "auc": 0.8, "note": "n/a"})}


@pytest.mark.parametrize(
    ("rule", "mse", "passed", "detail"),
    [
        (ResolvedRule("mse", max=6.0), 5.2, True, "mse 5.2 <= 6.0"),
        (ResolvedRule("mse", max=6.0), 6.0, True, "mse 6.0 <= 6.0"),
        (ResolvedRule("mse", max=6.0), 6.4, False, "mse 6.4 > 6.0"),
        (ResolvedRule("mse", min=1.0, max=6.0), 0.5, False, "mse 0.5 < 1.0"),
        (ResolvedRule("mse", min=1.0, max=6.0), 2.0, True, "1.0 <= mse 2.0 <= 6.0"),
        (ResolvedRule("mse", max=6.0), 5.123456789, True, "mse 5.12346 <= 6.0"),
    ],
)
def test_thresholds(rule: ResolvedRule, mse: float, passed: bool, detail: str) -> None:
    report = evaluate_gate([rule], {"mse": mse}, {})
    assert (report.passed, report.results[0].detail) == (passed, detail)
    assert report.reason == ("" if passed else detail)


@pytest.mark.parametrize(
    ("rule", "metrics", "passed", "detail"),
    [
        (
            ResolvedRule("mse", better_than="champion", direction="lower"),
            {"mse": 4.0},
            True,
            "mse 4.0 < 5.0 of champion (version 3)",
        ),
        (
            ResolvedRule("mse", better_than="champion", direction="lower"),
            {"mse": 5.0},  # equal is not better
            False,
            "mse 5.0 >= 5.0 of champion (version 3): not better",
        ),
        (
            ResolvedRule("mse", better_than="champion", direction="lower", margin=0.5),
            {"mse": 4.6},
            False,
            "mse 4.6 >= 5.0 of champion (version 3): not better by more than 0.5",
        ),
        (
            ResolvedRule("auc", better_than="champion", direction="higher"),
            {"auc": 0.85},
            True,
            "auc 0.85 > 0.8 of champion (version 3)",
        ),
        (
            ResolvedRule("note", better_than="champion", direction="higher"),
            {"note": 1.0},
            False,
            "cannot compare note: champion (version 3) has no number for it",
        ),
        (
            ResolvedRule("mse", better_than="prod", direction="lower"),
            {"mse": 99.0},
            True,
            "prod is not set: nothing to compare mse with",
        ),
    ],
)
def test_better_than_an_alias(
    rule: ResolvedRule, metrics: dict[str, float], passed: bool, detail: str
) -> None:
    report = evaluate_gate([rule], metrics, CHAMPION | {"prod": None})
    assert (report.passed, report.results[0].detail) == (passed, detail)
    assert report.compared_with == ({} if rule.better_than == "prod" else {"champion": 3})


def test_every_failing_rule_is_in_the_reason() -> None:
    rules = [
        ResolvedRule("mse", max=4.0),
        ResolvedRule("mse", better_than="champion", direction="lower"),
    ]
    report = evaluate_gate(rules, {"mse": 6.4}, CHAMPION)
    assert report.reason == "mse 6.4 > 4.0; mse 6.4 >= 5.0 of champion (version 3): not better"


def test_known_directions() -> None:
    assert known_direction("mse") == "lower"
    assert known_direction("val_RMSE") == "lower"
    assert known_direction("test_accuracy") == "higher"
    assert known_direction("throughput") is None


def test_resolving_rules_renders_numbers_and_fills_known_directions() -> None:
    seen = []

    def number(what: str, value: object) -> float:
        seen.append(what)
        return 6.0 if value == "${{ params.t }}" else float(value)  # type: ignore[arg-type]

    [threshold, versus] = resolve_rules(
        [GateRule("mse", max="${{ params.t }}"), GateRule("auc", better_than="champion")], number
    )
    assert threshold == ResolvedRule("mse", max=6.0, direction="lower")
    assert versus == ResolvedRule("auc", better_than="champion", direction="higher")
    assert seen[0] == "gate rule 1 (mse) max"


# -- the step's definition -----------------------------------------------------------------------


def test_the_builder_adds_a_register_step_that_round_trips_through_json() -> None:
    builder = PipelineBuilder("train")
    fit = builder.run(
        "fit", "python fit.py ${{ outputs.pre }} ${{ outputs.model }}", outputs=["pre", "model"]
    )
    registered = builder.register(
        "register",
        "abalone",
        preprocessor=fit.outputs.pre,
        booster=PackageFile(fit.outputs.model, file="booster.json"),
        columns=["a", "b"],
        input_example=[[1, 2]],
        metrics={"mse": 1.0},
        gate=[{"metric": "mse", "max": 6.0}],
        alias_on_register="candidate",
    )
    builder.run("deploy", "echo ${{ steps.register.values.version }}")
    pipeline = builder.build()

    assert registered.values.version == "${{ steps.register.values.version }}"
    assert lint_pipeline(pipeline) == []
    step = pipeline.steps["register"]
    assert step.kind == "register" and not step.cache
    assert Pipeline.from_json(pipeline.to_json()) == pipeline


def test_lint_refuses_package_sources_that_are_not_step_outputs() -> None:
    builder = PipelineBuilder("train")
    builder.run("fit", "python fit.py", values=["path"])
    builder.register(
        "register",
        "abalone",
        preprocessor="${{ steps.fit.values.path }}",
        booster="models/${{ steps.fit.values.path }}",
    )
    messages = [issue.message for issue in lint_pipeline(builder.build())]
    assert "'steps.fit.values.path' is not a step output" in messages
    assert "'models/${{ steps.fit.values.path }}' mixes text and a reference" in messages


def test_lint_wants_one_kind_of_package() -> None:
    builder = PipelineBuilder("train")
    builder.register("register", "abalone", preprocessor="pre.joblib")
    [issue] = lint_pipeline(builder.build())
    assert issue.message.startswith("register step 'register' needs either `package:`")
