"""Approval evidence built by register steps (`register: {evidence: {data, label}}`), on SQLite and
PostgreSQL: the candidate and the champion predict on the evaluation rows, the report folder is
recorded with the version, and an approval step with `approves:` decides it.

The models are tiny MLflow packages written without MLflow by a step (`make_model.py`): a pyfunc
flavor with a loader module of its own that predicts `x * k`, `k` read from the package's data
(`broken` makes `predict` raise). The register step's child process loads them with
`mlflow.pyfunc.load_model` as it would any package.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelyard.engine import service as runs_service
from modelyard.engine.runtime import Runtime
from modelyard.pipeline.builder import PipelineBuilder
from modelyard.pipeline.dag import Dag
from modelyard.pipeline.lint import lint_pipeline
from modelyard.pipeline.model import EVIDENCE_OUTPUT
from modelyard.project.loader import Problem, ProjectInvalid, load_project
from modelyard.registry import service
from modelyard.store import registry_schema as rt
from modelyard.store import runs as db
from modelyard.store.runs import RunRow
from modelyard.testing.projects import open_runtime, write_project
from modelyard.testing.registry import TIMES_K_MODEL_STEP

# The evaluation rows, split over two CSV files of the output folder (read in name order).
XS = [0.5, 1.0, 2.0, 3.5, 4.0]
YS = [1.1, 2.3, 3.8, 7.2, 8.1]
ROWS = """
import sys
from pathlib import Path

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
(out / "a.csv").write_text("x,y\\n0.5,1.1\\n1,2.3\\n2,3.8\\n")
(out / "b.csv").write_text("x,y\\n3.5,7.2\\n4,8.1\\n")
"""

TRAIN = """
pipelines:
  train:
    parameters:
      k: "2"  # a string: `broken` makes a model that cannot predict
      mse: 1.0
    steps:
      rows:
        run: @PY@ rows.py ${{ outputs.rows }}
        outputs: [rows]
      make:
        run: @PY@ make_model.py ${{ outputs.model }} ${{ params.k }}
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.make.outputs.model }}
          metrics: {mse: "${{ params.mse }}"}
          evidence:
            data: ${{ steps.rows.outputs.rows }}
            label: y
      approve:
        approval:
          message: Ship it?
          approves: register
          alias_on_approval: champion
"""

# MLflow's model loading warns about things that are not ours (versions, extra inputs).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@dataclass
class Project:
    root: Path
    runtime: Runtime

    def write(self, text: str, files: dict[str, str] | None = None) -> None:
        files = {"make_model.py": TIMES_K_MODEL_STEP, "rows.py": ROWS} | (files or {})
        write_project(self.root, text.replace("@PY@", sys.executable), files)

    def run(self, params: dict[str, Any] | None = None, pipeline: str = "train") -> RunRow:
        project = load_project(self.root)
        run_id = runs_service.create_run(self.runtime, project, pipeline, params or {})
        return runs_service.drive_run(self.runtime, run_id)

    def steps(self, run_id: int) -> dict[str, db.StepRow]:
        return runs_service.run_detail(self.runtime, run_id).steps

    def version(self, ref: str) -> service.VersionDetail:
        return service.show_version(self.runtime, self.root.name, ref)

    def evidence(self, ref: str, dest: Path) -> dict[str, Any]:
        service.write_evidence(self.runtime, self.root.name, ref, dest)
        return dict(json.loads((dest / "evidence.json").read_text()))

    def count(self, table: sa.Table) -> int:
        with self.runtime.db.begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    root = tmp_path / "toy"
    runtime = open_runtime(root, database_url)
    try:
        yield Project(root, runtime)
    finally:
        runtime.close()


def predictions_of_package(project: Project, ref: str, dest: Path, xs: list[float]) -> list[float]:
    """What the registered package itself predicts on the rows, loaded the way users load it."""
    import mlflow.pyfunc
    import pandas as pd

    service.download(project.runtime, project.root.name, ref, dest)
    model = mlflow.pyfunc.load_model(str(dest))
    return [float(v) for v in model.predict(pd.DataFrame({"x": xs}))]


# -- a first version, then one compared with the approved champion ------------------------------


def test_a_first_version_gets_evidence_without_a_champion_and_its_approval_step_waits(
    project: Project, tmp_path: Path
) -> None:
    project.write(TRAIN)

    run = project.run()

    assert run.status == "waiting", run.message
    steps = project.steps(run.id)
    register = steps["register"]
    assert register.status == "succeeded", register.message
    assert register.message == "registered toy/1 (pending)"
    evidence_output = (register.outputs or {})[EVIDENCE_OUTPUT]
    assert evidence_output["kind"] == "dir"
    version = project.version("toy/1").version
    assert version.evidence_digest == evidence_output["digest"]
    assert version.approval_status == "pending"
    # the approval step opened on the version the register step made
    approve = steps["approve"]
    assert approve.status == "waiting"
    assert approve.values == {"model": "toy", "version": 1}
    assert approve.message == "Ship it? (toy/1)"

    dest = tmp_path / "evidence"
    record = project.evidence("toy/1", dest)

    names = {p.name for p in dest.iterdir()}
    assert {"report.html", "summary.md", "evidence.json"} <= names
    assert {"predicted_vs_actual.png", "residuals.png"} <= names
    assert record["model"] == "toy" and record["label"] == "y" and record["rows"] == 5
    assert record["actuals"] == YS  # the label column of both CSV files, in name order
    assert record["candidate"]["label"] == f"candidate (run {run.id})"
    assert record["candidate"]["metrics"] == {"mse": 1.0}
    assert record["candidate"]["predictions"] == pytest.approx([2.0 * x for x in XS])
    # ... which is what the registered package predicts when a user loads it
    loaded = predictions_of_package(project, "toy/1", tmp_path / "package", XS)
    assert record["candidate"]["predictions"] == pytest.approx(loaded)
    assert record["champion"] is None and record["notes"] == []
    assert record["directions"] == {"mse": "lower"}
    summary = (dest / "summary.md").read_text()
    assert "**Champion:** none (no champion yet)" in summary
    assert "No champion yet" in (dest / "report.html").read_text()


def test_the_approved_version_becomes_the_champion_the_next_evidence_compares_with(
    project: Project, tmp_path: Path
) -> None:
    project.write(TRAIN)
    first = project.run()
    assert first.status == "waiting", first.message

    runs_service.decide_approval(
        project.runtime, first.id, "approve", approve=True, comment="good fit", actor="alice"
    )
    finished = runs_service.continue_after_decision(project.runtime, first.id)

    assert finished is not None and finished.status == "succeeded", finished
    approve = project.steps(first.id)["approve"]
    assert approve.status == "succeeded"
    assert approve.message == "approved by alice: good fit; toy@champion -> 1"
    detail = project.version("toy@champion")
    assert detail.version.version == 1 and detail.aliases == ["champion"]
    assert detail.version.approval_status == "approved"
    assert (detail.version.decided_by, detail.version.decision_comment) == ("alice", "good fit")
    assert [(e.kind, e.actor) for e in detail.events] == [
        ("registered", f"run {first.id}"),
        ("approved", "alice"),
        ("alias-set", "alice"),
    ]

    second = project.run({"k": "3", "mse": "0.8"})

    assert second.status == "waiting", second.message
    assert project.steps(second.id)["approve"].values == {"model": "toy", "version": 2}
    dest = tmp_path / "evidence-2"
    record = project.evidence("toy/2", dest)
    assert record["candidate"]["predictions"] == pytest.approx([3.0 * x for x in XS])
    assert record["champion"]["label"] == "toy/1 (@champion)"
    assert record["champion"]["ref"] == "toy/1"  # for links to its run and version
    assert record["champion"]["metrics"] == {"mse": 1.0}
    assert record["champion"]["predictions"] == pytest.approx([2.0 * x for x in XS])
    assert record["actuals"] == YS and record["notes"] == []
    summary = (dest / "summary.md").read_text()
    assert "**Champion:** toy/1 (@champion)" in summary
    assert "| `mse` ↓ | 0.8 | 1 | -0.2 | -20.0% | ✅ better |" in summary
    assert "`k` 2 → 3" in summary  # the parameters that changed since the champion
    # the champion is still version 1 until a person approves version 2
    assert project.version("toy@champion").version.version == 1


def test_a_gate_that_refuses_the_version_skips_its_approval_and_builds_no_evidence(
    project: Project,
) -> None:
    project.write(
        TRAIN.replace(
            "          evidence:", "          gate: [{metric: mse, max: 0.5}]\n          evidence:"
        )
    )

    run = project.run()

    assert run.status == "succeeded", run.message
    steps = project.steps(run.id)
    assert (steps["register"].values or {})["registered"] is False
    assert EVIDENCE_OUTPUT not in (steps["register"].outputs or {})
    assert steps["approve"].status == "skipped"
    assert steps["approve"].message == "'register' registered no version"
    assert project.count(rt.model_versions) == 0


# -- evidence errors -----------------------------------------------------------------------------


def test_a_label_missing_from_the_evaluation_set_fails_the_step_naming_the_columns(
    project: Project,
) -> None:
    project.write(TRAIN.replace("label: y", "label: rings"))

    run = project.run()

    assert run.status == "failed"
    steps = project.steps(run.id)
    message = steps["register"].message or ""
    assert steps["register"].status == "failed"
    assert message.startswith("packaging failed:")
    assert "the evaluation set has no column 'rings' (the actual values)" in message
    assert "its columns are: x, y" in message
    assert "Traceback" not in message
    assert steps["approve"].status == "pending"
    assert project.count(rt.model_versions) == 0 and project.count(rt.models) == 0


def test_a_label_that_is_not_numeric_fails_the_step(project: Project) -> None:
    rows = ROWS.replace("x,y\\n0.5,1.1", "x,y\\n0.5,old")
    project.write(TRAIN, {"rows.py": rows})

    run = project.run()

    assert run.status == "failed"
    message = project.steps(run.id)["register"].message or ""
    assert "the label column 'y' of the evaluation set holds values that are not numbers" in message
    assert project.count(rt.model_versions) == 0


def test_a_candidate_that_cannot_predict_fails_the_step_and_registers_nothing(
    project: Project,
) -> None:
    project.write(TRAIN)

    run = project.run({"k": "broken"})

    assert run.status == "failed"
    message = project.steps(run.id)["register"].message or ""
    assert message == (
        "packaging failed: the candidate failed to predict: RuntimeError: this model is broken"
    )
    assert project.count(rt.model_versions) == 0


SEEDED = """
pipelines:
  seed:                          # registers an approved champion without evidence
    parameters:
      k: broken
    steps:
      make:
        run: @PY@ make_model.py ${{ outputs.model }} ${{ params.k }}
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.make.outputs.model }}
          metrics: {mse: 2.0}
          approval_status: approved
          alias_on_register: champion
  train:
    steps:
      make:
        run: @PY@ make_model.py ${{ outputs.model }} 2
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.make.outputs.model }}
          metrics: {mse: 1.0}
          evidence:
            data: data             # a folder of the project, with `file:` choosing its CSV
            file: eval.csv
            label: y
"""


def test_a_champion_that_cannot_predict_is_a_note_and_the_version_is_registered(
    project: Project, tmp_path: Path
) -> None:
    project.write(
        SEEDED,
        {
            # whole numbers: read as integers, widened to the signature's doubles
            "data/eval.csv": "x,y\n1,2.5\n2,3.5\n",
            "data/other.csv": "a,b\nnot,read\n",  # would fail the label check if read
        },
    )
    seeded = project.run(pipeline="seed")
    assert seeded.status == "succeeded", seeded.message
    assert project.version("toy@champion").version.evidence_digest is None

    run = project.run()

    assert run.status == "succeeded", run.message
    assert run.message == "registered toy/2 (pending)"
    dest = tmp_path / "evidence"
    record = project.evidence("toy/2", dest)
    assert record["actuals"] == [2.5, 3.5]
    assert record["candidate"]["predictions"] == [2.0, 4.0]
    assert record["champion"]["label"] == "toy/1 (@champion)"
    assert record["champion"]["predictions"] is None
    note = (
        "toy/1 (@champion) could not predict on the evaluation set: toy/1 (@champion) failed to "
        "predict: RuntimeError: this model is broken"
    )
    assert record["notes"] == [note]
    assert "this model is broken" in (dest / "report.html").read_text()
    summary = (dest / "summary.md").read_text()
    assert "**Champion:** toy/1 (@champion)" in summary
    assert "**Note:**" in summary and "this model is broken" in summary  # Slack and PRs say it too


def test_a_file_missing_from_the_evidence_folder_fails_the_step_before_packaging(
    project: Project,
) -> None:
    project.write(SEEDED.replace("file: eval.csv", "file: nope.csv"), {"data/eval.csv": "x,y\n"})

    run = project.run()

    assert run.status == "failed"
    register = project.steps(run.id)["register"]
    assert register.message == (
        "register step 'register': the evidence data folder has no file 'nope.csv'\n"
        "  fix: its files are: eval.csv"
    )
    assert runs_service.run_detail(project.runtime, run.id).attempts["register"] == []
    assert project.count(rt.model_versions) == 0


def test_versions_registered_without_evidence_say_so(project: Project, tmp_path: Path) -> None:
    from modelyard.errors import NotFound

    project.write(SEEDED)
    project.run(pipeline="seed")

    with pytest.raises(NotFound, match="toy/1 has no approval evidence"):
        service.write_evidence(project.runtime, project.root.name, "toy/1", tmp_path / "e")
    assert not (tmp_path / "e").exists()


# -- lint and the Python API ---------------------------------------------------------------------


def problems(root: Path) -> list[Problem]:
    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    return info.value.problems


def line(problem: Problem) -> int:
    return int(problem.where.rsplit(":", 1)[1])


LINTED = """\
pipelines:
  train:
    parameters:
      k: "2"  # a string: `broken` makes a model that cannot predict
    steps:
      rows:
        run: echo ${{ outputs.rows }}
        outputs: [rows]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.rows.outputs.rows }}
          evidence:
            data: @DATA@
            label: y
      after:
        run: echo ${{ steps.register.outputs.evidence }}
"""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "rows-${{ steps.rows.outputs.rows }}",
            "'rows-${{ steps.rows.outputs.rows }}' mixes text and a reference",
        ),
        ("${{ params.k }}", "'params.k' is not a step output"),
    ],
)
def test_evidence_data_must_be_one_step_output_or_a_path(
    tmp_path: Path, data: str, message: str
) -> None:
    root = write_project(tmp_path, LINTED.replace("@DATA@", data))

    found = problems(root)

    assert [(p.level, p.message, line(p)) for p in found] == [("error", message, 14)]
    assert found[0].where.startswith(str(root / "modelyard.yaml"))


def test_evidence_data_from_an_unknown_step_is_an_error(tmp_path: Path) -> None:
    root = write_project(tmp_path, LINTED.replace("@DATA@", "${{ steps.nope.outputs.rows }}"))

    (problem,) = problems(root)

    # references in a register step are located at its `register:` key, as package sources are
    assert (problem.level, problem.message, line(problem)) == ("error", "unknown step 'nope'", 10)


def test_the_evidence_output_exists_only_when_evidence_is_built(tmp_path: Path) -> None:
    text = LINTED.replace("@DATA@", "${{ steps.rows.outputs.rows }}")
    load_project(write_project(tmp_path / "with", text))  # `outputs.evidence` is known

    without = text.replace(
        "          evidence:\n            data: ${{ steps.rows.outputs.rows }}\n"
        "            label: y\n",
        "",
    )
    (problem,) = problems(write_project(tmp_path / "without", without))

    assert problem.message == "step 'register' has no output 'evidence'"
    assert line(problem) == 14


def test_the_python_api_builds_evidence_and_an_approval_of_the_version() -> None:
    builder = PipelineBuilder("train")
    rows = builder.run("rows", "echo ${{ outputs.rows }}", outputs=["rows"])
    register = builder.register(
        "register",
        model="toy",
        mlflow_model=rows.outputs.rows,
        evidence={"data": rows.outputs.rows, "label": "y"},
    )
    builder.approval("approve", "Ship it?", approves=register, alias_on_approval="champion")

    pipeline = builder.build()

    assert lint_pipeline(pipeline) == []
    spec = pipeline.steps["register"].registration
    assert spec is not None and spec.evidence is not None
    assert (spec.evidence.data, spec.evidence.label, spec.evidence.compare_with) == (
        "${{ steps.rows.outputs.rows }}",
        "y",
        "champion",
    )
    assert register.outputs.evidence == "${{ steps.register.outputs.evidence }}"
    approve = pipeline.steps["approve"]
    assert (approve.approves, approve.alias_on_approval) == ("register", "champion")
    assert Dag(pipeline).dependencies["approve"] == frozenset({"register"})
