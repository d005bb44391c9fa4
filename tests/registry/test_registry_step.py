"""The register step in pipelines, on SQLite and PostgreSQL: gates, numbering, champions, caching,
lineage, and (scenario S1) an inference pipeline that loads and predicts from the registry.

Most tests register a folder shaped like an MLflow model (`modelyard.testing.registry`), which
needs no packaging; the S1 test packages a real preprocessor + booster made once per module from
a slice of the abalone data, as tests/registry/test_packaging.py does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from modelyard.engine import service as runs_service
from modelyard.engine.runtime import Runtime
from modelyard.project.loader import load_project
from modelyard.registry import service
from modelyard.store import registry_schema as rt
from modelyard.store import runs as db
from modelyard.store import schema as t
from modelyard.store.runs import RunRow
from modelyard.testing.abalone import COLUMNS, Abalone, make_abalone
from modelyard.testing.projects import open_runtime, write_project
from modelyard.testing.registry import FAKE_MODEL_STEP

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "abalone"

MARK = """
import sys
from pathlib import Path
Path(sys.argv[2], sys.argv[1]).write_text("ran")
"""

GATED = """
pipelines:
  train:
    parameters:
      mse: 5.0
      threshold: 6.0
    steps:
      make:
        run: @PY@ make_model.py ${{ outputs.model }}
        outputs: [model]
      register:
        register:
          model: toy
          description: a toy model
          mlflow_model: ${{ steps.make.outputs.model }}
          metrics:
            mse: ${{ params.mse }}
          params: {note: "${{ run.pipeline }}"}
          tags: {team: ml}
          gate:
            - {metric: mse, max: "${{ params.threshold }}"}
            - {metric: mse, better_than: champion}
      announce:
        run: @PY@ mark.py announce @SCRATCH@
        after: [register]
      decide:
        condition: steps.register.values.registered
        else: [alert]
      alert:
        run: @PY@ mark.py alert @SCRATCH@
"""

# MLflow's input-example code trips a pandas 3 deprecation warning; it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Operation with range is deprecated")


@dataclass
class Project:
    root: Path
    scratch: Path
    runtime: Runtime

    def write(self, text: str, files: dict[str, str] | None = None) -> None:
        text = text.replace("@PY@", sys.executable).replace("@SCRATCH@", str(self.scratch))
        write_project(self.root, text, files)

    def run(self, params: dict[str, Any] | None = None, pipeline: str = "train") -> RunRow:
        project = load_project(self.root)
        run_id = runs_service.create_run(self.runtime, project, pipeline, params or {})
        return runs_service.drive_run(self.runtime, run_id)

    def steps(self, run_id: int) -> dict[str, db.StepRow]:
        return runs_service.run_detail(self.runtime, run_id).steps

    def attempts(self, run_id: int, step: str) -> list[db.AttemptRow]:
        return runs_service.run_detail(self.runtime, run_id).attempts[step]

    def count(self, table: sa.Table) -> int:
        with self.runtime.db.begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def marked(self, name: str) -> bool:
        return (self.scratch / name).exists()


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    root = tmp_path / "toy"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    runtime = open_runtime(root, database_url)
    try:
        yield Project(root, scratch, runtime)
    finally:
        runtime.close()


def gated(project: Project) -> None:
    project.write(GATED, {"make_model.py": FAKE_MODEL_STEP, "mark.py": MARK})


# -- gates ---------------------------------------------------------------------------------------


def test_a_passing_gate_registers_version_1_with_metrics_params_and_lineage(
    project: Project,
) -> None:
    gated(project)

    run = project.run()

    assert run.status == "succeeded", run.message
    assert run.message == "registered toy/1 (pending); skipped: alert (decide: true)"
    steps = project.steps(run.id)
    register = steps["register"]
    package = register.outputs["package"]
    assert register.values == {
        "registered": True,
        "model": "toy",
        "version": 1,
        "package_digest": package["digest"],
        "reason": None,
    }
    assert package["kind"] == "dir"
    assert project.marked("announce") and not project.marked("alert")
    detail = service.show_version(project.runtime, "toy", "toy")
    version = detail.version
    assert detail.ref == "toy/1" and detail.model.description == "a toy model"
    assert version.approval_status == "pending" and version.decided_by is None
    assert version.metrics == {"mse": 5.0}
    assert version.params == {"mse": 5.0, "threshold": 6.0, "note": "train"}
    assert version.tags == {"team": "ml"}
    assert (version.package_digest, version.flavor) == (package["digest"], "python_function")
    assert version.signature is not None and version.signature["inputs"][0]["name"] == "x"
    assert version.lineage == {
        "run_id": run.id,
        "project": "toy",
        "pipeline": "train",
        "step": "register",
        "git": None,  # the temporary folder is not in a git repository
        "data": {},
        "inputs": {"mlflow_model": steps["make"].outputs["model"]["digest"]},
        "parents": [],
    }
    assert [g["passed"] for g in version.gate] == [True, True]
    assert version.gate[0]["detail"] == "mse 5.0 <= 6.0"
    assert version.gate[1]["detail"] == "champion is not set: nothing to compare mse with"
    assert [(e.kind, e.actor) for e in detail.events] == [("registered", f"run {run.id}")]
    assert "# toy version 1" in version.card and "| mse | 5 |" in version.card


def test_a_failing_threshold_ends_the_run_cleanly_as_not_registered(project: Project) -> None:
    gated(project)

    run = project.run({"mse": "6.4"})

    assert run.status == "succeeded", run.message
    assert run.message.startswith("not registered: mse 6.4 > 6.0; skipped: announce")
    steps = project.steps(run.id)
    assert steps["register"].status == "succeeded"
    assert steps["register"].message == "not registered: mse 6.4 > 6.0"
    assert steps["register"].values == {
        "registered": False,
        "model": "toy",
        "version": None,
        "package_digest": None,
        "reason": "mse 6.4 > 6.0",
    }
    assert project.attempts(run.id, "register") == []  # refused before any packaging
    assert project.count(rt.model_versions) == 0 and project.count(rt.models) == 0
    # what depends on the registration is skipped; a condition can still branch on it
    assert steps["announce"].status == "skipped"
    assert steps["announce"].message == "'register' registered no version"
    assert steps["decide"].values == {"result": False}
    assert project.marked("alert") and not project.marked("announce")


def test_better_than_the_champion_compares_with_the_version_the_alias_points_at(
    project: Project,
) -> None:
    gated(project)
    first = project.run({"mse": "5.0"})
    assert first.message.startswith("registered toy/1 (pending);")
    service.set_alias(project.runtime, "toy", "toy", "champion", 1, actor="ana")

    worse = project.run({"mse": "5.5"})

    assert worse.status == "succeeded"
    assert worse.message.startswith(
        "not registered: mse 5.5 >= 5.0 of champion (version 1): not better"
    )
    assert project.count(rt.model_versions) == 1

    better = project.run({"mse": "4.5"})

    assert better.message.startswith("registered toy/2 (pending);")
    version = service.show_version(project.runtime, "toy", "toy/2").version
    assert version.gate[1]["detail"] == "mse 4.5 < 5.0 of champion (version 1)"
    assert version.gate[1]["compared_with"] == 1
    assert version.lineage["parents"] == [{"model": "toy", "version": 1, "alias": "champion"}]
    # the champion stays where a person put it
    assert service.show_version(project.runtime, "toy", "toy@champion").version.version == 1


def test_a_register_step_is_never_taken_from_the_cache(project: Project) -> None:
    gated(project)
    first = project.run()
    second = project.run()

    assert second.message.startswith("registered toy/2 (pending);")
    steps = project.steps(second.id)
    assert steps["make"].cached  # the model it packages is reused ...
    assert not steps["register"].cached  # ... but registering happens again
    assert len(project.attempts(second.id, "register")) == 1
    with project.runtime.db.begin() as conn:
        cached_steps = set(conn.execute(sa.select(t.cache_entries.c.step)).scalars())
    assert cached_steps == {"make", "announce"}
    versions = service.list_versions(project.runtime, "toy", "toy")[1]
    assert [(d.version.version, d.version.run_id) for d in versions] == [
        (2, second.id),
        (1, first.id),
    ]


def test_alias_on_register_and_approved_status_are_recorded_with_the_version(
    project: Project,
) -> None:
    project.write(
        """
        pipelines:
          train:
            steps:
              make:
                run: @PY@ make_model.py ${{ outputs.model }}
                outputs: [model]
              register:
                register:
                  model: toy
                  mlflow_model: ${{ steps.make.outputs.model }}
                  approval_status: approved
                  alias_on_register: candidate
        """,
        {"make_model.py": FAKE_MODEL_STEP},
    )

    run = project.run()

    assert run.message == "registered toy/1 (approved), alias candidate"
    detail = service.show_version(project.runtime, "toy", "toy@candidate")
    assert detail.version.version == 1 and detail.aliases == ["candidate"]
    assert detail.version.approval_status == "approved"
    assert detail.version.decided_by == f"run {run.id}"
    assert [e.kind for e in detail.events] == ["registered", "approved", "alias-set"]


def test_a_packaging_failure_fails_the_step_and_registers_nothing(project: Project) -> None:
    project.write(
        """
        pipelines:
          train:
            steps:
              make:
                run: @PY@ -c "import sys, pathlib; pathlib.Path(sys.argv[1], 'x').write_text('x')"
                  ${{ outputs.model }}
                outputs: [model]
              register:
                register:
                  model: toy
                  mlflow_model: ${{ steps.make.outputs.model }}
        """
    )

    run = project.run()

    assert run.status == "failed"
    message = project.steps(run.id)["register"].message or ""
    assert message.startswith("packaging failed:")
    assert "not an MLflow model package: it has no MLmodel file" in message
    assert "Traceback" not in message
    assert project.count(rt.model_versions) == 0


def test_a_metric_that_is_not_a_number_fails_the_step_with_its_name(project: Project) -> None:
    project.write(
        """
        pipelines:
          train:
            parameters:
              mse: oops
            steps:
              make:
                run: @PY@ make_model.py ${{ outputs.model }}
                outputs: [model]
              register:
                register:
                  model: toy
                  mlflow_model: ${{ steps.make.outputs.model }}
                  metrics: {mse: "${{ params.mse }}"}
        """,
        {"make_model.py": FAKE_MODEL_STEP},
    )

    run = project.run()

    assert run.status == "failed"
    message = project.steps(run.id)["register"].message or ""
    assert "register step 'register': metric 'mse' is 'oops', not a number" in message
    assert project.count(rt.model_versions) == 0


def test_lineage_names_the_git_commit_and_whether_the_tree_was_dirty(project: Project) -> None:
    if shutil.which("git") is None:
        pytest.skip("the git binary is not installed")
    gated(project)
    git = ["git", "-C", str(project.root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "modelyard.yaml", "make_model.py", "mark.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()

    clean = project.run()
    (project.root / "mark.py").write_text(MARK + "\n# changed\n")
    dirty = project.run()

    lineage = {
        run.id: service.show_version(project.runtime, "toy", f"toy/{n}").version.lineage["git"]
        for n, run in enumerate((clean, dirty), start=1)
    }
    assert lineage[clean.id] == {"commit": head, "dirty": False, "branch": "main"}
    assert lineage[dirty.id] == {"commit": head, "dirty": True, "branch": "main"}


# -- scenario S1: an inference pipeline from the registry predicts from raw rows ----------------


@pytest.fixture(scope="module")
def abalone(tmp_path_factory: pytest.TempPathFactory) -> Abalone:
    """The example's preprocessor and booster, fit on a slice (a few boosting rounds)."""
    return make_abalone(tmp_path_factory.mktemp("abalone-slice"))


S1 = """
pipelines:
  train:
    steps:
      fit:
        run: @PY@ fit.py ${{ outputs.preprocessor }}
        outputs: [preprocessor]
      register:
        register:
          model: abalone
          package:
            preprocessor:
              output: ${{ steps.fit.outputs.preprocessor }}
              file: preprocessor.joblib
            model: files/xgboost-model.json             # a file of the project
            columns: [sex, length, diameter, height, whole_weight, shucked_weight,
                      viscera_weight, shell_weight]
            input_example:
              - [M, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]
          metrics: {mse: 4.2}
"""

FIT = """
import shutil, sys
shutil.copy(r"@PREPROCESSOR@", sys.argv[1])
"""


def test_an_inference_pipeline_version_downloads_and_predicts_rings_from_raw_rows(
    project: Project, abalone: Abalone, tmp_path: Path
) -> None:
    import mlflow.pyfunc

    project.write(S1, {"fit.py": FIT.replace("@PREPROCESSOR@", str(abalone.preprocessor))})
    (project.root / "files").mkdir()
    shutil.copy(abalone.booster, project.root / "files")

    run = project.run()

    assert run.status == "succeeded", run.message
    assert run.message == "registered abalone/1 (pending)"
    version = service.show_version(project.runtime, "toy", "abalone/1").version
    assert version.flavor == "python_function"
    assert version.signature is not None
    assert [spec["name"] for spec in version.signature["inputs"]] == COLUMNS
    dest = tmp_path / "downloaded"
    service.download(project.runtime, "toy", "abalone/1", dest)
    model = mlflow.pyfunc.load_model(str(dest))
    predictions = np.asarray(model.predict(abalone.frame))
    assert predictions.shape == (len(abalone.frame),)
    assert np.allclose(predictions, abalone.expected())
    assert 3 < predictions.mean() < 20  # rings of abalone, not zeros
