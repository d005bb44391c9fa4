"""Experiment tracking: steps log through `modelyard.log_*` or a JSON-lines file, the driver records
metrics and parameters in the metadata DB with an outbox, and the pusher sends them to MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import modelyard
from modelyard.engine.runtime import Runtime
from modelyard.store import runs as db
from modelyard.testing import open_runtime, run_pipeline, write_project
from modelyard.tracking import api, pusher
from modelyard.tracking.records import run_metrics, run_params

PROJECT = """
name: tracked
pipelines:
  train:
    parameters:
      depth: 3
    steps:
      script:
        run: {py} script.py
        values: [rows]
      inline:
        python: tracked_steps_{tag}:fit
        executor: inline
        params:
          depth: ${{{{ params.depth }}}}
        values: [score]
      isolated:
        python: tracked_steps_{tag}:evaluate
        executor: process
        values: []
"""

FILES = {
    "script.py": """
        import json, os
        with open(os.environ["MODELYARD_METRICS_FILE"], "a") as f:
            f.write(json.dumps({"metric": "loss", "value": 0.5, "step": 1}) + "\\n")
            f.write("not json\\n")
            f.write(json.dumps({"param": "source", "value": "script"}) + "\\n")
        with open(os.environ["MODELYARD_VALUES_FILE"], "w") as f:
            json.dump({"rows": 120}, f)
    """,
}

STEPS_MODULE = """
    import modelyard

    def fit(depth):
        modelyard.log_params({"depth": depth, "kind": "tree"})
        for epoch in range(3):
            modelyard.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
        return {"score": 0.75}

    def evaluate():
        modelyard.log_metrics({"rmse": 2.5, "mae": 1.5})
"""


def make_project(root: Path) -> Path:
    tag = root.parent.name.replace("-", "_")
    files = dict(FILES)
    files[f"tracked_steps_{tag}.py"] = STEPS_MODULE
    return write_project(root, PROJECT.format(py=sys.executable, tag=tag), files)


def outbox(runtime: Runtime, run_id: int) -> list[tuple[str, float | None]]:
    import sqlalchemy as sa

    from modelyard.store import tracking_schema as tt

    o = tt.tracking_outbox
    with runtime.db.begin() as conn:
        rows = conn.execute(
            sa.select(o.c.kind, o.c.pushed_at).where(o.c.run_id == run_id).order_by(o.c.id)
        )
        return [(r.kind, r.pushed_at) for r in rows]


@pytest.fixture
def tracked(tmp_path: Path, database_url: str) -> tuple[Runtime, db.RunRow]:
    root = make_project(tmp_path / "project")
    runtime = open_runtime(root, database_url)
    run = run_pipeline(runtime, root, "train")
    assert run.status == "succeeded", run.message
    return runtime, run


# -- the logging API -----------------------------------------------------------------------------


def test_api_appends_json_lines_to_the_attempt_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("MODELYARD_METRICS_FILE", str(target))
    modelyard.log_metric("acc", 0.9, step=2)
    modelyard.log_metrics({"a": 1, "b": 2.5})
    modelyard.log_params({"depth": 3, "name": "x"})
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines == [
        {"metric": "acc", "value": 0.9, "step": 2},
        {"metric": "a", "value": 1.0, "step": 0},
        {"metric": "b", "value": 2.5, "step": 0},
        {"param": "depth", "value": 3},
        {"param": "name", "value": "x"},
    ]
    with pytest.raises(TypeError):
        modelyard.log_metric("acc", "high")  # type: ignore[arg-type]


def test_api_prefers_the_threads_attempt_file_and_is_a_no_op_outside_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELYARD_METRICS_FILE", raising=False)
    api.log_metric("ignored", 1.0)  # no step: nothing to write to, no error
    mine, other = tmp_path / "mine.jsonl", tmp_path / "other.jsonl"
    monkeypatch.setenv("MODELYARD_METRICS_FILE", str(tmp_path / "env.jsonl"))

    def in_thread() -> None:
        with api.attempt_metrics_file(other):
            api.log_metric("other", 2.0)

    with api.attempt_metrics_file(mine):
        worker = threading.Thread(target=in_thread)
        worker.start()
        worker.join()
        api.log_metric("mine", 1.0)
    assert json.loads(mine.read_text())["metric"] == "mine"
    assert json.loads(other.read_text())["metric"] == "other"
    assert not (tmp_path / "env.jsonl").exists()


# -- the driver records metrics and parameters ---------------------------------------------------


def test_driver_records_metrics_params_and_the_outbox(tracked: tuple[Runtime, db.RunRow]) -> None:
    runtime, run = tracked
    with runtime.db.begin() as conn:
        metrics = {
            (m["step"], m["key"], m["step_index"]): m["value"] for m in run_metrics(conn, run.id)
        }
        params = {(p["step"], p["key"]): p["value"] for p in run_params(conn, run.id)}
        events = [(e.kind, e.step, e.message) for e in db.get_events(conn, run.id)]
    assert metrics == {
        ("script", "loss", 1): 0.5,
        ("script", "rows", 0): 120.0,  # a numeric value is a metric too
        ("inline", "loss", 0): 1.0,
        ("inline", "loss", 1): 0.5,
        ("inline", "loss", 2): pytest.approx(1 / 3),
        ("inline", "score", 0): 0.75,
        ("isolated", "rmse", 0): 2.5,
        ("isolated", "mae", 0): 1.5,
    }
    assert params == {
        (None, "depth"): "3",  # the run's parameters
        ("script", "source"): "script",
        ("inline", "depth"): "3",
        ("inline", "kind"): "tree",
    }
    warnings = [e for e in events if e[0] == "tracking-warning"]
    assert len(warnings) == 1 and warnings[0][1] == "script"
    assert "line 2: not JSON" in warnings[0][2]
    kinds = [kind for kind, pushed in outbox(runtime, run.id) if pushed is None]
    assert kinds[0] == "params" and kinds[-1] == "status"
    assert kinds.count("metrics") == 3
    assert run.tracking_uri == runtime.settings.effective_tracking_uri


# -- the pusher ----------------------------------------------------------------------------------


def pipeline_runs(client: Any, experiment_id: str) -> list[Any]:
    """The experiment's runs that are not nested under another (its steps' runs are)."""
    found = client.search_runs([experiment_id])
    return [r for r in found if "mlflow.parentRunId" not in r.data.tags]


def test_pusher_sends_the_run_to_mlflow(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    runtime = open_runtime(root)
    run = run_pipeline(runtime, root, "train")
    assert run.status == "succeeded", run.message

    report = pusher.push(runtime)

    # the run's parameters, 3 steps' metrics, 2 steps' parameters, 3 step ends, the run's end
    assert report.errors == {} and report.runs == [run.id] and report.pushed == 10
    assert all(pushed is not None for _, pushed in outbox(runtime, run.id))
    assert pusher.pending(runtime) == []
    with runtime.db.begin() as conn:
        row = db.get_run(conn, run.id)
    assert row.tracking_uri == f"sqlite:///{root / '.modelyard' / 'mlflow.db'}"
    assert row.mlflow_run_id and row.mlflow_experiment_id

    from mlflow import MlflowClient

    client = MlflowClient(row.tracking_uri)
    experiment = client.get_experiment_by_name("tracked/train")
    assert experiment is not None and experiment.experiment_id == row.mlflow_experiment_id
    assert experiment.artifact_location == (root / ".modelyard" / "mlartifacts").as_uri()
    (found,) = pipeline_runs(client, experiment.experiment_id)
    assert found.info.run_id == row.mlflow_run_id
    assert found.info.status == "FINISHED"
    assert found.data.params == {
        "depth": "3",
        "script.source": "script",
        "inline.depth": "3",
        "inline.kind": "tree",
    }
    assert found.data.metrics["isolated.rmse"] == 2.5
    assert found.data.metrics["inline.score"] == 0.75
    assert found.data.metrics["script.rows"] == 120
    history = client.get_metric_history(row.mlflow_run_id, "inline.loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    tags = found.data.tags
    assert tags["modelyard.run_id"] == str(run.id)
    assert (tags["modelyard.pipeline"], tags["modelyard.trigger"]) == ("train", "manual")

    # a second push has nothing to do, and a new run goes to the same experiment
    assert pusher.push(runtime).pushed == 0
    second = run_pipeline(runtime, root, "train")
    assert pusher.push(runtime).runs == [second.id]
    assert len(pipeline_runs(client, experiment.experiment_id)) == 2


def test_an_unreachable_server_leaves_records_pending(
    tracked: tuple[Runtime, db.RunRow], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, run = tracked
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with runtime.db.begin() as conn:
        db.update_run(conn, run.id, tracking_uri="http://127.0.0.1:9")

    report = pusher.push(runtime)

    assert report.pushed == 0 and set(report.errors) == {run.id}
    (waiting,) = pusher.pending(runtime)
    assert waiting["run_id"] == run.id and waiting["records"] == 10
    assert waiting["attempts"] == 1 and waiting["last_error"]
    with runtime.db.begin() as conn:
        row = db.get_run(conn, run.id)
    assert row.status == "succeeded" and row.mlflow_run_id is None


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_run_never_imports_mlflow_and_pushes_in_a_detached_process(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "MLFLOW_"))}
    code = (
        "import sys; from modelyard.cli.main import main; "
        f"code = main(['--project', {str(root)!r}, 'run', 'train', '--quiet']); "
        "print('MLFLOW' if 'mlflow' in sys.modules else 'NO-MLFLOW'); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO-MLFLOW"

    runtime = open_runtime(root)
    deadline = time.monotonic() + 90
    while pusher.pending(runtime):  # the detached pusher drains the outbox
        if time.monotonic() > deadline:
            log = (root / ".modelyard" / "logs" / "tracking-push.log").read_text()
            pytest.fail(f"the background push did not finish: {log}")
        time.sleep(0.2)
    with runtime.db.begin() as conn:
        (run,) = db.list_runs(conn)
    assert run.mlflow_run_id is not None
    runtime.close()


def test_cli_tracking_status_and_push(
    tracked: tuple[Runtime, db.RunRow],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from modelyard.cli.main import main

    runtime, run = tracked
    root = Path(run.project_dir)
    monkeypatch.setenv("MODELYARD_DATABASE_URL", runtime.settings.effective_database_url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with runtime.db.begin() as conn:  # unreachable: the push reports and keeps the records
        db.update_run(conn, run.id, tracking_uri="http://127.0.0.1:9")
    capsys.readouterr()
    assert main(["--project", str(root), "tracking", "push", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["pushed"] == 0 and str(run.id) in report["errors"]
    assert main(["--project", str(root), "tracking", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [(p["run_id"], p["records"], p["attempts"]) for p in status["pending"]] == [
        (run.id, 10, 1)
    ]
    assert main(["--project", str(root), "tracking", "status"]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:9" not in out.splitlines()[0]  # the settings' URI, not the run's
    assert out.splitlines()[1].split() == ["RUN", "RECORDS", "ATTEMPTS", "SINCE", "LAST", "ERROR"]
