"""The MLflow link and metrics in `show` and `models show`, and `worker` and `watch` starting the
background push after each run they drive."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.engine import service
from modelyard.engine.runtime import Runtime
from modelyard.project.loader import load_project
from modelyard.store import runs as db
from modelyard.testing import open_runtime, write_project
from modelyard.testing.registry import FAKE_MODEL_STEP
from modelyard.tracking import pusher
from modelyard.tracking.links import NOT_PUSHED

PROJECT = """
name: linked
data_sources:
  raw: {url: raw, include: ["*.csv"]}
pipelines:
  train:
    triggers: {data: [raw]}
    steps:
      fit:
        run: @PY@ fit.py ${{ outputs.fitted }}
        outputs: [fitted]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.fit.outputs.fitted }}
"""

FIT = (
    FAKE_MODEL_STEP
    + """
import json, os
with open(os.environ["MODELYARD_METRICS_FILE"], "a") as f:
    for epoch, loss in enumerate([0.9, 0.4]):
        f.write(json.dumps({"metric": "loss", "value": loss, "step": epoch}) + "\\n")
    f.write(json.dumps({"metric": "rmse", "value": 2.25}) + "\\n")
"""
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    text = PROJECT.replace("@PY@", sys.executable)
    return write_project(tmp_path / "linked", text, {"fit.py": FIT, "raw/a.csv": "1,2\n"})


@pytest.fixture
def runtime(root: Path) -> Iterator[Runtime]:
    runtime = open_runtime(root)
    yield runtime
    runtime.close()


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The project folders the background push was started for (no process is started)."""
    monkeypatch.setenv("MODELYARD_TRACKING_AUTO_PUSH", "1")  # safe: the start is a fake
    started: list[str] = []
    monkeypatch.setattr(
        pusher, "start_background_push", lambda _settings, folder: started.append(str(folder))
    )
    return started


def test_show_prints_the_link_and_each_steps_metrics(
    root: Path, runtime: Runtime, cli: Callable[..., Any]
) -> None:
    assert cli(root, "run", "train", "--quiet").code == 0
    before = cli(root, "show", "1")
    assert f"  mlflow: {NOT_PUSHED}" in before.out
    assert "metrics:\n  fit: loss=0.4, rmse=2.25\n" in before.out  # the last of each history
    waiting = cli(root, "show", "1", "--json").json()
    assert waiting["tracking"]["run_id"] is None and waiting["tracking"]["hint"] == NOT_PUSHED
    assert all(s["tracking"] is None for s in waiting["steps"])

    assert pusher.push(runtime).errors == {}

    shown = cli(root, "show", "1", "--json").json()
    with runtime.db.begin() as conn:
        run = db.get_run(conn, 1)
        steps = db.get_steps(conn, 1)
    tracking = shown["tracking"]
    assert (tracking["experiment_id"], tracking["run_id"]) == (
        run.mlflow_experiment_id,
        run.mlflow_run_id,
    )
    assert tracking["url"] is None  # a local store has no web page until `mlflow ui` serves it
    state = root / ".modelyard"
    assert tracking["hint"] == (
        f"run `mlflow ui --backend-store-uri sqlite:///{state / 'mlflow.db'} "
        f"--default-artifact-root {state / 'mlartifacts'}`, then open "
        f"http://127.0.0.1:5000/#/experiments/{run.mlflow_experiment_id}/runs/{run.mlflow_run_id}"
    )
    by_name = {s["name"]: s for s in shown["steps"]}
    assert by_name["fit"]["metrics"] == {"loss": 0.4, "rmse": 2.25}
    assert by_name["register"]["metrics"] == {}
    assert by_name["fit"]["tracking"] == {"run_id": steps["fit"].mlflow_run_id, "url": None}
    assert cli(root, "show", "1").out.count(run.mlflow_run_id) == 1


def test_a_servers_link_never_shows_its_credentials(
    root: Path, runtime: Runtime, cli: Callable[..., Any]
) -> None:
    assert cli(root, "run", "train", "--quiet").code == 0
    with runtime.db.begin() as conn:
        db.update_run(
            conn,
            1,
            tracking_uri="https://alice:s3cret@mlflow.example.com/",
            mlflow_experiment_id="4",
            mlflow_run_id="abc",
        )
        step = db.get_step(conn, 1, "fit")
        db.update_step(conn, step.id, mlflow_run_id="def")
    url = "https://mlflow.example.com/#/experiments/4/runs/abc"

    text = cli(root, "show", "1")
    assert f"  mlflow: {url}\n" in text.out
    shown = cli(root, "show", "1", "--json")
    listed = cli(root, "runs", "--json")
    assert shown.json()["tracking"]["url"] == url
    assert shown.json()["tracking"]["uri"] == "https://mlflow.example.com/"
    fit = next(s for s in shown.json()["steps"] if s["name"] == "fit")
    assert fit["tracking"]["url"] == "https://mlflow.example.com/#/experiments/4/runs/def"
    assert listed.json()[0]["tracking"]["url"] == url
    assert "s3cret" not in text.out + shown.out + listed.out


def test_models_show_links_the_run_that_registered_the_version(
    root: Path, runtime: Runtime, cli: Callable[..., Any]
) -> None:
    assert cli(root, "run", "train", "--quiet").code == 0
    assert f"  mlflow: {NOT_PUSHED}\n" in cli(root, "models", "show", "toy/1").out

    assert pusher.push(runtime).errors == {}

    with runtime.db.begin() as conn:
        run = db.get_run(conn, 1)
    shown = cli(root, "models", "show", "toy/1", "--json").json()
    assert shown["lineage"]["run_id"] == 1
    assert shown["tracking"]["run_id"] == run.mlflow_run_id
    assert shown["tracking"]["hint"].startswith("run `mlflow ui --backend-store-uri sqlite:///")
    text = cli(root, "models", "show", "toy/1").out
    assert f"/#/experiments/{run.mlflow_experiment_id}/runs/{run.mlflow_run_id}" in text


def test_the_worker_starts_the_push_after_each_run_it_drives(
    root: Path, runtime: Runtime, cli: Callable[..., Any], starts: list[str]
) -> None:
    # a run whose driver died before it started: the worker takes it over
    service.create_run(runtime, load_project(root), "train")
    worker = cli(root, "worker", "--once")
    assert worker.code == 0, worker.err
    assert "worker: resuming run 1 (train)" in worker.out
    assert starts == [str(root)]
    assert cli(root, "worker", "--once").code == 0 and starts == [str(root)]  # nothing to drive


def test_watch_starts_the_push_after_each_run_it_starts(
    root: Path, cli: Callable[..., Any], starts: list[str]
) -> None:
    watch = cli(root, "watch", "--once")
    assert watch.code == 0, watch.err
    assert "watch: run 1 (train) succeeded" in watch.out
    assert starts == [str(root)]


def test_worker_and_watch_go_on_when_the_push_cannot_start(
    root: Path, runtime: Runtime, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pusher, "start_background_push", broken)
    monkeypatch.setenv("MODELYARD_TRACKING_AUTO_PUSH", "1")  # safe: the start always fails
    watch = cli(root, "watch", "--once")
    assert watch.code == 0 and "watch: run 1 (train) succeeded" in watch.out
    assert "watch: warning: cannot start the MLflow push" in watch.err
    assert "No space left on device" in watch.err and "modelyard tracking push" in watch.err

    service.create_run(runtime, load_project(root), "train")
    worker = cli(root, "worker", "--once")
    assert worker.code == 0 and "worker: warning: cannot start the MLflow push" in worker.err
    with runtime.db.begin() as conn:
        assert db.get_run(conn, 2).status == "succeeded"
