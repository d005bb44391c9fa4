"""Draining the tracking outbox into MLflow: `python -m modelyard.tracking.pusher PROJECT_DIR`.

Each pipeline run becomes one MLflow run in the experiment `PROJECT/PIPELINE`, tagged
`modelyard.run_id`, `modelyard.pipeline` and `modelyard.trigger`; its ids are kept on the run row.
Records are pushed in order, each marked when MLflow has it; a failure (an unreachable server)
leaves the rest of that run's records pending with `attempts` and `last_error`, for the next push.
`modelyard run` starts this module in a detached process once the run settles, so importing MLflow
(~2 s) never delays a run or the CLI. Only this module imports MLflow, and only when pushing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modelyard.store import runs as db
from modelyard.store import tracking_schema as tt

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime
    from modelyard.settings import Settings

MLFLOW_STATUS = {db.SUCCEEDED: "FINISHED", db.FAILED: "FAILED", db.CANCELLED: "KILLED"}
MAX_METRICS_PER_BATCH = 1000  # MLflow's limits of log_batch
MAX_PARAMS_PER_BATCH = 100


MAX_PASSES = 20  # a pusher keeps going while runs keep adding records, within reason


@dataclass
class PushReport:
    pushed: int = 0  # records sent
    runs: list[int] = field(default_factory=list)  # runs fully pushed
    errors: dict[int, str] = field(default_factory=dict)  # run id -> why its records wait
    busy: bool = False  # another pusher holds the lock: nothing was done

    def to_json(self) -> dict[str, Any]:
        return {
            "pushed": self.pushed,
            "runs": self.runs,
            "errors": {str(k): v for k, v in self.errors.items()},
            "busy": self.busy,
        }


def pending(runtime: Runtime) -> list[dict[str, Any]]:
    """Per run with records not yet in MLflow: how many, attempts and the last error."""
    o = tt.tracking_outbox
    query = (
        sa.select(
            o.c.run_id,
            sa.func.count().label("records"),
            sa.func.max(o.c.attempts).label("attempts"),
            sa.func.min(o.c.created_at).label("oldest"),
        )
        .where(o.c.pushed_at.is_(None))
        .group_by(o.c.run_id)
        .order_by(o.c.run_id)
    )
    with runtime.db.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            row["last_error"] = conn.execute(
                sa.select(o.c.last_error)
                .where(o.c.run_id == row["run_id"], o.c.last_error.is_not(None))
                .order_by(o.c.id.desc())
                .limit(1)
            ).scalar()
    return rows


def push(runtime: Runtime, *, run_id: int | None = None) -> PushReport:
    """Send the pending records (of one run, or all) to MLflow."""
    # an unreachable server should fail a push in seconds, not minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    report = PushReport()
    with _exclusive(runtime.settings) as acquired:
        if not acquired:
            report.busy = True
            return report
        o = tt.tracking_outbox
        query = sa.select(o).where(o.c.pushed_at.is_(None)).order_by(o.c.id)
        if run_id is not None:
            query = query.where(o.c.run_id == run_id)
        with runtime.db.begin() as conn:
            records = [dict(r._mapping) for r in conn.execute(query)]
        by_run: dict[int, list[dict[str, Any]]] = {}
        for record in records:
            by_run.setdefault(record["run_id"], []).append(record)
        pusher = _Pusher(runtime)
        for rid, run_records in by_run.items():
            pushed, error = pusher.push_run(rid, run_records)
            report.pushed += pushed
            if error is None:
                report.runs.append(rid)
            else:
                report.errors[rid] = error
    return report


class _Pusher:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.clients: dict[str, Any] = {}

    def client(self, uri: str) -> Any:
        if uri not in self.clients:
            from mlflow import MlflowClient

            self.clients[uri] = MlflowClient(tracking_uri=uri)
        return self.clients[uri]

    def push_run(self, run_id: int, records: list[dict[str, Any]]) -> tuple[int, str | None]:
        pushed = 0
        record = records[0]
        try:
            client, mlflow_run_id = self._mlflow_run(run_id)
            for record in records:
                _apply(client, mlflow_run_id, record)
                with self.runtime.db.begin() as conn:
                    conn.execute(
                        tt.tracking_outbox.update()
                        .where(tt.tracking_outbox.c.id == record["id"])
                        .values(
                            pushed_at=time.time(),
                            attempts=record["attempts"] + 1,
                            last_error=None,
                        )
                    )
                pushed += 1
        except Exception as exc:  # anything MLflow raises: the record waits for the next push
            error = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
            with self.runtime.db.begin() as conn:
                conn.execute(
                    tt.tracking_outbox.update()
                    .where(tt.tracking_outbox.c.id == record["id"])
                    .values(attempts=record["attempts"] + 1, last_error=error)
                )
            return pushed, error
        return pushed, None

    def _mlflow_run(self, run_id: int) -> tuple[Any, str]:
        with self.runtime.db.begin() as conn:
            run = db.get_run(conn, run_id)
        settings = self.runtime.settings
        uri = run.tracking_uri or settings.effective_tracking_uri
        client = self.client(uri)
        if run.mlflow_run_id:
            return client, run.mlflow_run_id
        name = f"{run.project}/{run.pipeline}"
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            location = None
            if uri == settings.effective_tracking_uri and not settings.tracking_uri:
                location = settings.tracking_artifacts_dir.as_uri()
            try:
                experiment_id = client.create_experiment(name, artifact_location=location)
            except Exception:  # created meanwhile by another pusher
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        tags = {
            "mlflow.runName": f"{run.pipeline}-{run.id}",
            "modelyard.run_id": str(run.id),
            "modelyard.project": run.project,
            "modelyard.pipeline": run.pipeline,
            "modelyard.trigger": run.trigger,
        }
        if run.git_commit:
            tags["mlflow.source.git.commit"] = run.git_commit
        if run.git_branch:
            tags["mlflow.source.git.branch"] = run.git_branch
        started = run.started_at or run.created_at
        created = client.create_run(experiment_id, start_time=int(started * 1000), tags=tags)
        mlflow_run_id = created.info.run_id
        with self.runtime.db.begin() as conn:
            db.update_run(
                conn,
                run_id,
                tracking_uri=uri,
                mlflow_experiment_id=str(experiment_id),
                mlflow_run_id=mlflow_run_id,
            )
        return client, mlflow_run_id


def _apply(client: Any, mlflow_run_id: str, record: dict[str, Any]) -> None:
    from mlflow.entities import Metric, Param

    kind, payload = record["kind"], record["payload"]
    if kind == "params":
        params = [Param(k, v) for k, v in payload["params"].items()]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            client.log_batch(mlflow_run_id, params=params[i : i + MAX_PARAMS_PER_BATCH])
    elif kind == "metrics":
        metrics = [Metric(k, v, at, step) for k, v, step, at in payload["metrics"]]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(mlflow_run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    elif kind == "status":
        status = MLFLOW_STATUS.get(payload["status"], "FINISHED")
        client.set_terminated(mlflow_run_id, status=status, end_time=payload.get("at"))


@contextlib.contextmanager
def _exclusive(settings: Settings) -> Iterator[bool]:
    """One pusher at a time per state folder (a second one returns at once)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / "tracking-push.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pusher_running(settings: Settings) -> bool:
    with _exclusive(settings) as acquired:
        return not acquired


def start_background_push(settings: Settings, project_dir: str | Path) -> None:
    """Start a detached `python -m modelyard.tracking.pusher` that outlives the CLI."""
    import subprocess

    if not settings.tracking_auto_push or _pusher_running(settings):
        # a running pusher takes our records too: it looks again after each pass (see main), so
        # back-to-back runs share one pusher instead of each importing mlflow (~2 s of CPU)
        return
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.logs_dir / "tracking-push.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "modelyard.tracking.pusher", str(project_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )


def main(argv: list[str]) -> int:
    from modelyard.engine.runtime import Runtime
    from modelyard.project.loader import project_settings
    from modelyard.settings import Settings

    root = Path(argv[1] if len(argv) > 1 else ".").resolve()
    runtime = Runtime(Settings.resolve(root, project_settings(root)))
    try:
        for _ in range(MAX_PASSES):
            report = push(runtime)
            if report.busy or report.errors:
                break  # another pusher has it, or MLflow is unreachable: try again next time
            # a CLI that found this pusher running did not start another: look again
            if not pending(runtime):
                break
    finally:
        runtime.close()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} pushed {report.pushed} record(s); waiting: {report.errors or 'none'}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
