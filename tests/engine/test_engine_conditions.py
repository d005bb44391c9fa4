"""Conditions choose a branch from a metric inside an output; `fail` steps end the run."""

from __future__ import annotations

import pytest
from engine_harness import EngineHarness

MARK = """
    import sys
    from pathlib import Path
    Path(sys.argv[2], sys.argv[1]).write_text("ran")
"""

EVALUATE = """
    import json, os
    out = os.path.join(os.environ["MODELYARD_OUTPUT_METRICS"], "m.json")
    with open(out, "w") as f:
        json.dump({"a": {"b": 0.3}}, f)
"""

BRANCHES = """
pipelines:
  gate:
    parameters:
      t: 0.5
    steps:
      evaluate:
        run: @PY@ evaluate.py
        outputs: [metrics]
      check:
        condition: json(steps.evaluate.outputs.metrics, "m.json").a.b <= params.t
        then: [deploy]
        else: [alert]
      deploy:
        run: @PY@ mark.py deploy @SCRATCH@
      announce:
        run: @PY@ mark.py announce @SCRATCH@
        after: [deploy]
      alert:
        run: @PY@ mark.py alert @SCRATCH@
      page:
        run: @PY@ mark.py page @SCRATCH@
        after: [alert]
      report:
        run: @PY@ mark.py report @SCRATCH@
        after: [check]
"""


@pytest.mark.parametrize(
    ("threshold", "result", "chosen", "skipped"),
    [
        ("0.5", True, ["deploy", "announce"], ["alert", "page"]),
        ("0.25", False, ["alert", "page"], ["deploy", "announce"]),
    ],
)
def test_condition_runs_one_branch_and_skips_the_other(
    engine: EngineHarness, threshold: str, result: bool, chosen: list[str], skipped: list[str]
) -> None:
    engine.write(BRANCHES, {"mark.py": MARK, "evaluate.py": EVALUATE})

    run = engine.run("gate", {"t": threshold})

    assert run.status == "succeeded", run.message
    steps = engine.steps(run.id)
    assert steps["check"].status == "succeeded"
    assert steps["check"].values == {"result": result}
    for name in [*chosen, "report"]:
        assert steps[name].status == "succeeded", name
        assert (engine.scratch / name).exists(), name
    for name in skipped:
        assert steps[name].status == "skipped", name
        assert not (engine.scratch / name).exists(), name
        assert engine.attempts(run.id, name) == []
    first, follower = skipped
    assert steps[first].message == f"condition 'check' was {str(result).lower()}"
    assert steps[follower].message == f"'{first}' was skipped"
    assert run.message.startswith(f"skipped: {first}, {follower}")
    assert "check: " + str(result).lower() in run.message


FAIL_GATE = """
pipelines:
  gate:
    parameters:
      t: 0.5
    steps:
      evaluate:
        run: @PY@ evaluate.py
        outputs: [metrics]
      check:
        condition: json(steps.evaluate.outputs.metrics, "m.json").a.b <= params.t
        then: [deploy]
        else: [too_high]
      too_high:
        fail: >-
          metric ${{ json(steps.evaluate.outputs.metrics, "m.json").a.b }}
          is above ${{ params.t }}
      deploy:
        run: @PY@ mark.py deploy @SCRATCH@
"""


def test_fail_step_ends_the_run_with_its_rendered_message(engine: EngineHarness) -> None:
    engine.write(FAIL_GATE, {"mark.py": MARK, "evaluate.py": EVALUATE})

    run = engine.run("gate", {"t": "0.1"})

    assert run.status == "failed"
    assert run.message == "step 'too_high' failed: metric 0.3 is above 0.1"
    steps = engine.steps(run.id)
    assert steps["too_high"].status == "failed"
    assert steps["too_high"].message == "metric 0.3 is above 0.1"
    assert steps["deploy"].status == "skipped"
    assert not (engine.scratch / "deploy").exists()


def test_fail_step_on_the_branch_not_taken_is_skipped(engine: EngineHarness) -> None:
    engine.write(FAIL_GATE, {"mark.py": MARK, "evaluate.py": EVALUATE})

    run = engine.run("gate", {"t": "0.9"})

    assert run.status == "succeeded", run.message
    steps = engine.steps(run.id)
    assert steps["too_high"].status == "skipped"
    assert steps["deploy"].status == "succeeded"
    assert (engine.scratch / "deploy").exists()
    assert run.message.startswith("skipped: too_high")


def test_condition_on_a_missing_file_fails_the_run(engine: EngineHarness) -> None:
    engine.write(
        BRANCHES.replace('"m.json").a.b', '"missing.json").a.b'),
        {"mark.py": MARK, "evaluate.py": EVALUATE},
    )

    run = engine.run("gate")

    assert run.status == "failed"
    steps = engine.steps(run.id)
    assert steps["check"].status == "failed"
    assert steps["check"].message.startswith("condition error:")
    assert "missing.json" in steps["check"].message
    for name in ("deploy", "announce", "alert", "page", "report"):
        assert not (engine.scratch / name).exists(), name
