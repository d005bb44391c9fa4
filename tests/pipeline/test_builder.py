"""Pipelines defined in Python with @step and PipelineBuilder."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.errors import ConfigError
from modelyard.pipeline.builder import PipelineBuilder, build_pipeline, define_pipeline, step
from modelyard.pipeline.lint import lint_pipeline
from modelyard.project.loader import ProjectInvalid, load_project
from modelyard.testing import open_runtime, run_pipeline, write_project


@step(outputs=["model"], values=["score"], retries=2)
def fit(data: Path, model: Path, depth: int = 3) -> dict[str, float]:
    return {"score": float(depth)}


def test_step_decorator_keeps_a_plain_function(tmp_path: Path) -> None:
    assert fit(tmp_path, tmp_path, depth=4) == {"score": 4.0}


def test_builder_produces_the_same_model_as_yaml() -> None:
    @define_pipeline(parameters={"depth": 5}, description="d")
    def definition(p: PipelineBuilder) -> None:
        prep = p.run("prep", "python prep.py --out ${{ outputs.data }}", outputs=["data"])
        trained = p.call(fit, inputs={"data": prep.outputs.data}, params={"depth": p.params.depth})
        p.condition("good", f"{trained.values.score[4:-3].strip()} > 1", then=["approve"])
        p.approval("approve", "ship it?", timeout=60)

    built = build_pipeline("train", definition)
    assert list(built.steps) == ["prep", "fit", "good", "approve"]
    assert built.parameters["depth"].type == "int"
    assert built.parameters["depth"].default == 5
    fit_step = built.steps["fit"]
    assert fit_step.kind == "python"
    assert fit_step.function == f"{__name__}:fit"
    assert fit_step.inputs == {"data": "${{ steps.prep.outputs.data }}"}
    assert fit_step.params == {"depth": "${{ params.depth }}"}
    assert fit_step.retry.max == 2
    assert built.steps["good"].condition == "steps.fit.values.score > 1"
    assert built.steps["approve"].approval_timeout == 60
    assert [i for i in lint_pipeline(built) if i.level == "error"] == []


def test_references_to_undeclared_outputs_fail_early() -> None:
    builder = PipelineBuilder("p")
    handle = builder.call(fit)
    with pytest.raises(AttributeError, match="known: model"):
        _ = handle.outputs.nope
    with pytest.raises(ValueError, match="duplicate step name"):
        builder.call(fit)


def test_nested_functions_are_refused() -> None:
    def local(x: int) -> None:
        return None

    with pytest.raises(ValueError, match="top-level function"):
        PipelineBuilder("p").call(local)


def test_project_file_define_runs_end_to_end(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "proj",
        """
        pipelines:
          quick:
            define: flows:quick
        """,
        {
            "flows.py": """
            from modelyard import define_pipeline, step

            @step(outputs=["data"], executor="inline")
            def prepare(data, n: int = 3):
                (data / "n.txt").write_text(str(n))

            @step(values=["double"])
            def double(data):
                return {"double": 2 * int((data / "n.txt").read_text())}

            @define_pipeline(parameters={"n": 4})
            def quick(p):
                prep = p.call(prepare, params={"n": p.params.n})
                p.call(double, inputs={"data": prep.outputs.data})
            """
        },
    )
    runtime = open_runtime(root)
    run = run_pipeline(runtime, root, "quick", {"n": "5"})
    assert run.status == "succeeded"
    from modelyard.engine.service import run_detail

    assert run_detail(runtime, run.id).steps["double"].values == {"double": 10}


def test_broken_definition_is_reported_with_file_and_line(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "proj",
        """
        pipelines:
          ok:
            steps:
              a: {run: echo hi}
          broken:
            define: flows:broken
        """,
        {"flows.py": "def broken(p):\n    raise RuntimeError('boom')\n"},
    )
    with pytest.raises(ProjectInvalid) as caught:
        load_project(root)
    text = str(caught.value)
    assert "modelyard.yaml:7" in text
    assert "RuntimeError: boom" in text


def test_define_and_steps_together_are_refused(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "proj",
        """
        pipelines:
          both:
            define: flows:x
            steps:
              a: {run: echo hi}
        """,
    )
    with pytest.raises(ConfigError, match="either"):
        load_project(root)
