"""The pure pipeline model round-trips through JSON (`modelyard.pipeline.model`)."""

from __future__ import annotations

import json

import pytest

from modelyard.pipeline.model import Parameter, Pipeline, Retry, Step

PIPELINE = Pipeline(
    name="train",
    description="d",
    max_parallel=2,
    parameters={
        "depth": Parameter("depth", "int", default=3, choices=(3, 5)),
        "data": Parameter("data", "path", required=True, description="where"),
    },
    steps={
        "fit": Step(
            name="fit",
            kind="run",
            command=("python", "fit.py"),
            inputs={"d": "data/x.csv"},
            outputs=("model",),
            values=("mse",),
            params={"k": [1, 2]},
            env={"A": "1"},
            code=("src",),
            retry=Retry(max=2, backoff=0.5),
            timeout=60.0,
            after=("prep",),
        ),
        "prep": Step(name="prep", kind="python", function="jobs:prep", executor="inline"),
        "gate": Step(
            name="gate", kind="condition", condition="1 > 0", then=("fit",), otherwise=("no",)
        ),
        "no": Step(name="no", kind="fail", message="nope"),
        "ok": Step(name="ok", kind="approval", message="ship?", approval_timeout=3600.0),
    },
)


def test_pipeline_round_trips_through_json():
    text = json.dumps(PIPELINE.to_json())
    assert Pipeline.from_json(json.loads(text)) == PIPELINE


def test_step_order_is_kept():
    again = Pipeline.from_json(json.loads(json.dumps(PIPELINE.to_json())))
    assert list(again.steps) == ["fit", "prep", "gate", "no", "ok"]


def test_string_command_stays_a_string():
    step = Step(name="s", kind="run", command="echo hi")
    assert Step.from_json(json.loads(json.dumps(step.to_json()))).command == "echo hi"


@pytest.mark.parametrize(("failures", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (10, 300.0)])
def test_retry_delay_grows_up_to_the_maximum(failures: int, delay: float):
    assert Retry(max=10).delay(failures) == delay


def test_compute_kinds():
    assert PIPELINE.steps["fit"].is_compute
    assert PIPELINE.steps["prep"].is_compute
    assert not PIPELINE.steps["gate"].is_compute
    assert not PIPELINE.steps["ok"].is_compute
