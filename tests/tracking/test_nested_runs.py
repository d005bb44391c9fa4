"""The pusher against a real MLflow store (SQLite in the project): every step that ran is a run
nested under the pipeline's, with its metrics, parameters and outputs (a register step's package as
`model`); creating MLflow runs is a claim; one push at a time per database."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelyard.engine.runtime import Runtime
from modelyard.store import runs as db
from modelyard.store import tracking_schema as tt
from modelyard.testing import open_runtime, run_pipeline, write_project
from modelyard.testing.registry import FAKE_MODEL_STEP
from modelyard.tracking import pusher
from modelyard.tracking.records import enqueue

LIMIT = 100  # bytes: the table (8 bytes) is logged, the blob and the fitted model are not

PROJECT = """
name: nested
pipelines:
  train:
    steps:
      prepare:
        run: @PY@ prepare.py ${{ outputs.table }} ${{ outputs.big }}
        outputs: [table, big]
        values: [rows]
      fit:
        run: @PY@ make_model.py ${{ outputs.fitted }}
        outputs: [fitted]
        after: [prepare]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.fit.outputs.fitted }}
          metrics: {rmse: 2.5}
  broken:
    steps:
      boom:
        run: @PY@ boom.py
"""

FILES = {
    "prepare.py": """
        import json, os, sys
        from pathlib import Path

        Path(sys.argv[1], "table.csv").write_text("x,y\\n1,2\\n")
        Path(sys.argv[2], "blob.bin").write_bytes(b"0" * 4096)
        with open(os.environ["MODELYARD_METRICS_FILE"], "a") as f:
            f.write(json.dumps({"metric": "loss", "value": 0.5, "step": 0}) + "\\n")
            f.write(json.dumps({"param": "source", "value": "csv"}) + "\\n")
        with open(os.environ["MODELYARD_VALUES_FILE"], "w") as f:
            json.dump({"rows": 2}, f)
    """,
    "make_model.py": FAKE_MODEL_STEP,
    "boom.py": "raise SystemExit(3)\n",
}


@dataclass
class Pushed:
    runtime: Runtime
    run: db.RunRow  # after the push: with its MLflow ids
    steps: dict[str, db.StepRow]
    client: Any  # mlflow.MlflowClient on the project's store

    def nested(self) -> dict[str, Any]:
        """step name -> its nested MLflow run."""
        found = self.client.search_runs(
            [self.run.mlflow_experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run.mlflow_run_id}'",
        )
        return {r.info.run_name: r for r in found}


def make_project(root: Path) -> Path:
    return write_project(root, PROJECT.replace("@PY@", sys.executable), FILES)


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[tuple[Path, Runtime]]:
    root = make_project(tmp_path / "project")
    runtime = open_runtime(root, database_url, tracking_artifact_limit=LIMIT)
    try:
        yield root, runtime
    finally:
        runtime.close()


def push_run(runtime: Runtime, root: Path, pipeline: str = "train") -> Pushed:
    from mlflow import MlflowClient

    run = run_pipeline(runtime, root, pipeline)
    report = pusher.push(runtime)
    assert report.errors == {} and run.id in report.runs
    with runtime.db.begin() as conn:
        run = db.get_run(conn, run.id)
        steps = db.get_steps(conn, run.id)
    assert run.tracking_uri is not None
    return Pushed(runtime, run, steps, MlflowClient(run.tracking_uri))


def paths(client: Any, run_id: str, path: str | None = None) -> list[str]:
    return sorted(a.path for a in client.list_artifacts(run_id, path))


# -- nested runs ---------------------------------------------------------------------------------


def test_each_step_is_a_nested_run_with_its_metrics_params_and_outputs(
    project: tuple[Path, Runtime], tmp_path: Path
) -> None:
    pushed = push_run(project[1], project[0])
    client, run, steps = pushed.client, pushed.run, pushed.steps
    assert run.status == "succeeded", run.message

    nested = pushed.nested()
    assert set(nested) == {"prepare", "fit", "register"}
    for name, found in nested.items():
        assert found.info.run_id == steps[name].mlflow_run_id
        assert found.info.status == "FINISHED"
        tags = found.data.tags
        assert tags["mlflow.parentRunId"] == run.mlflow_run_id
        assert (tags["modelyard.run_id"], tags["modelyard.step"]) == (str(run.id), name)
        assert tags["modelyard.step_kind"] == steps[name].kind
        assert "modelyard.cached" not in tags
    assert nested["register"].data.tags["modelyard.step_kind"] == "register"

    # metrics and parameters with their own names on the step, prefixed on the pipeline's run
    prepare = nested["prepare"]
    assert prepare.data.metrics == {"loss": 0.5, "rows": 2.0}
    assert prepare.data.params == {"source": "csv"}
    parent = client.get_run(run.mlflow_run_id)
    assert parent.data.metrics == {"prepare.loss": 0.5, "prepare.rows": 2.0}
    assert parent.data.params == {"prepare.source": "csv"}
    assert parent.info.status == "FINISHED"

    # outputs: small ones logged under their names, bigger ones named by a tag
    assert paths(client, prepare.info.run_id) == ["table"]
    assert paths(client, prepare.info.run_id, "table") == ["table/table.csv"]
    big = steps["prepare"].outputs["big"]
    assert prepare.data.tags["modelyard.output.big"] == (
        f"{big['digest']} (not logged: 4096 bytes > {LIMIT})"
    )
    fit = nested["fit"]
    assert paths(client, fit.info.run_id) == []
    assert "not logged" in fit.data.tags["modelyard.output.fitted"]

    # the package is always logged, as `model`: MLflow shows it as a model
    register = nested["register"].info.run_id
    assert steps["register"].outputs["package"]["size"] > LIMIT
    assert "model/MLmodel" in paths(client, register, "model")
    local = client.download_artifacts(register, "model/MLmodel", str(tmp_path))
    assert "python_function" in Path(local).read_text()


def test_cached_and_failed_steps_are_nested_runs_too(project: tuple[Path, Runtime]) -> None:
    root, runtime = project
    push_run(runtime, root)

    again = push_run(runtime, root)  # prepare and fit come from the cache

    nested = again.nested()
    assert again.steps["prepare"].cached and again.steps["fit"].cached
    assert nested["prepare"].data.tags["modelyard.cached"] == "true"
    assert nested["fit"].data.tags["modelyard.cached"] == "true"
    assert nested["prepare"].info.status == "FINISHED"
    assert "modelyard.cached" not in nested["register"].data.tags
    assert paths(again.client, nested["prepare"].info.run_id) == []  # nothing new to log

    broken = push_run(runtime, root, "broken")
    assert broken.run.status == "failed"
    (boom,) = broken.nested().values()
    assert boom.info.run_name == "boom" and boom.info.status == "FAILED"
    assert broken.client.get_run(broken.run.mlflow_run_id).info.status == "FAILED"


def test_records_queued_before_nested_runs_still_push(project: tuple[Path, Runtime]) -> None:
    root, runtime = project
    run = run_pipeline(runtime, root, "broken")
    with runtime.db.begin() as conn:  # payloads of the previous release: no step, prefixed keys
        millis = int(time.time() * 1000)
        enqueue(conn, run.id, "metrics", {"metrics": [["old.acc", 0.9, 0, millis]]})
        enqueue(conn, run.id, "params", {"params": {"old.kind": "tree"}})

    assert pusher.push(runtime).errors == {}

    with runtime.db.begin() as conn:
        row = db.get_run(conn, run.id)
    from mlflow import MlflowClient

    parent = MlflowClient(row.tracking_uri).get_run(row.mlflow_run_id)
    assert parent.data.metrics == {"old.acc": 0.9}
    assert parent.data.params == {"old.kind": "tree"}


# -- claims and the push lock --------------------------------------------------------------------


def test_a_pusher_that_loses_a_claim_deletes_its_mlflow_run_and_uses_the_winners(
    project: tuple[Path, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another pusher records its MLflow run between our create and our claim (for the pipeline's
    run and for each step's): ours is deleted and everything goes to theirs."""
    from mlflow import MlflowClient

    root, runtime = project
    run = run_pipeline(runtime, root, "broken")
    create = MlflowClient.create_run
    mine: list[str] = []
    theirs: list[str] = []

    def racing_create(self: MlflowClient, experiment_id: str, **kwargs: Any) -> Any:
        winner = create(self, experiment_id, **kwargs).info.run_id
        with runtime.db.begin() as conn:
            step = (kwargs.get("tags") or {}).get("modelyard.step")
            if step is None:
                assert db.claim_mlflow_run(conn, run.id, run.tracking_uri, experiment_id, winner)
            else:
                row = db.get_step(conn, run.id, step)
                assert db.claim_step_mlflow_run(conn, row.id, winner)
        theirs.append(winner)
        created = create(self, experiment_id, **kwargs)
        mine.append(created.info.run_id)
        return created

    monkeypatch.setattr(MlflowClient, "create_run", racing_create)
    assert pusher.push(runtime).errors == {}
    monkeypatch.undo()

    with runtime.db.begin() as conn:
        row = db.get_run(conn, run.id)
        boom = db.get_step(conn, run.id, "boom")
    assert [row.mlflow_run_id, boom.mlflow_run_id] == theirs
    client = MlflowClient(row.tracking_uri)
    assert [client.get_run(r).info.lifecycle_stage for r in mine] == ["deleted", "deleted"]
    assert client.get_run(boom.mlflow_run_id).info.status == "FAILED"
    assert client.get_run(row.mlflow_run_id).info.status == "FAILED"


def test_one_push_at_a_time_per_database(tmp_path: Path, database_url: str) -> None:
    """On PostgreSQL a pusher of another machine (here: another project folder, so another state
    folder and file lock, on the same database) waits for the advisory lock; on SQLite, whose
    database is a local file, the state folder's lock is the one."""
    root = make_project(tmp_path / "project")
    first = open_runtime(root, database_url)
    postgres = database_url.startswith("postgresql")
    elsewhere = tmp_path / "elsewhere" if postgres else root
    second = open_runtime(elsewhere, database_url)
    try:
        run = run_pipeline(first, root, "broken")
        with pusher._exclusive(first) as acquired:
            assert acquired
            busy = pusher.push(second)
            assert busy.busy and busy.pushed == 0
            if postgres:
                assert _advisory_locks(second) == 1
        report = pusher.push(second)
        assert report.runs == [run.id] and not report.busy
        if postgres:
            assert _advisory_locks(second) == 0
    finally:
        first.close()
        second.close()


def _advisory_locks(runtime: Runtime) -> int:
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :key"
    with runtime.db.begin() as conn:
        return int(conn.execute(sa.text(query), {"key": pusher.PUSH_LOCK_KEY}).scalar_one())


def test_the_postgresql_lock_is_released_when_its_pusher_fails(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "project")
    runtime = open_runtime(root, postgres_url)
    try:
        run_pipeline(runtime, root, "broken")

        def fail(*_: Any) -> Any:
            raise RuntimeError("the push failed")

        monkeypatch.setattr(pusher._Pusher, "push_run", fail)
        with pytest.raises(RuntimeError):
            pusher.push(runtime)
        assert _advisory_locks(runtime) == 0
        monkeypatch.undo()
        assert pusher.push(runtime).errors == {}
    finally:
        runtime.close()


def test_pending_outbox_records_name_their_step(project: tuple[Path, Runtime]) -> None:
    root, runtime = project
    run = run_pipeline(runtime, root, "train")
    o = tt.tracking_outbox
    with runtime.db.begin() as conn:
        rows = conn.execute(sa.select(o.c.kind, o.c.payload).where(o.c.run_id == run.id))
        records = [(kind, payload.get("step")) for kind, payload in rows]
    assert records[0] == ("params", None) and records[-1] == ("status", None)
    steps = [(kind, step) for kind, step in records if kind in ("step", "artifact")]
    assert steps == [
        ("artifact", "prepare"),
        ("artifact", "prepare"),
        ("step", "prepare"),
        ("artifact", "fit"),
        ("step", "fit"),
        ("artifact", "register"),
        ("step", "register"),
    ]
