"""Draining the tracking outbox into MLflow: `python -m modelyard.tracking.pusher PROJECT_DIR`.

Each pipeline run becomes one MLflow run in the experiment `PROJECT/PIPELINE`, tagged
`modelyard.run_id`, `modelyard.pipeline` and `modelyard.trigger`; each step that ran becomes a
run nested under it (`mlflow.parentRunId`, named after the step) with the step's metrics,
parameters and outputs. The ids are kept on the run and step rows; creating them is a claim, so
two pushers never leave two MLflow runs for one run. Records are pushed in order, each marked when
MLflow has it; a failure (an unreachable server) leaves the rest of that run's records pending with
`attempts` and `last_error`, for the next push. `modelyard run` starts this module in a detached
process once the run settles, so importing MLflow (~2 s) never delays a run or the CLI. Only this
module imports MLflow, and only when pushing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modelyard.errors import ArtifactError, DatabaseError
from modelyard.store import runs as db
from modelyard.store import tracking_schema as tt
from modelyard.tracking.links import redact

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime
    from modelyard.settings import Settings
    from modelyard.store.db import Database

MLFLOW_STATUS = {db.SUCCEEDED: "FINISHED", db.FAILED: "FAILED", db.CANCELLED: "KILLED"}
MAX_METRICS_PER_BATCH = 1000  # MLflow's limits of log_batch
MAX_PARAMS_PER_BATCH = 100


MAX_PASSES = 20  # a pusher keeps going while runs keep adding records, within reason
PACKAGE_ARTIFACT_PATH = "model"  # where a register step's package goes: MLflow shows it as a model
# pg_try_advisory_lock(key, schema): one pusher per PostgreSQL database and schema, whichever
# machine it runs on (a fixed 31-bit key, so it fits the two-int4 form of the lock)
PUSH_LOCK_KEY = int.from_bytes(hashlib.sha256(b"modelyard-tracking-push").digest()[:4]) >> 1
_TRY_LOCK = "SELECT pg_try_advisory_lock(:key, hashtext(coalesce(current_schema(), '')))"
_UNLOCK = "SELECT pg_advisory_unlock(:key, hashtext(coalesce(current_schema(), '')))"


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
    with _exclusive(runtime) as acquired:
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


@dataclass
class _Target:
    """Where a pipeline run's records go: its MLflow run, and its steps' nested runs."""

    client: Any
    experiment_id: str
    run_id: str
    steps: dict[str, str] = field(default_factory=dict)  # step -> nested MLflow run id


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
            target = self._mlflow_run(run_id)
            for record in records:
                self._apply(target, run_id, record)
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
            # an MLflow error may quote the server's URL, credentials included
            error = redact(f"{type(exc).__name__}: {str(exc).strip()[:500]}")
            with self.runtime.db.begin() as conn:
                conn.execute(
                    tt.tracking_outbox.update()
                    .where(tt.tracking_outbox.c.id == record["id"])
                    .values(attempts=record["attempts"] + 1, last_error=error)
                )
            return pushed, error
        return pushed, None

    # -- the MLflow runs -------------------------------------------------------------------------

    def _mlflow_run(self, run_id: int) -> _Target:
        """The pipeline run's MLflow run, created (and claimed on the run row) on first use."""
        with self.runtime.db.begin() as conn:
            run = db.get_run(conn, run_id)
        uri = run.tracking_uri or self.runtime.settings.effective_tracking_uri
        if run.mlflow_run_id and run.mlflow_experiment_id:
            return _Target(self.client(uri), run.mlflow_experiment_id, run.mlflow_run_id)
        client = self.client(uri)
        experiment_id = str(self._experiment(client, uri, f"{run.project}/{run.pipeline}"))
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
        mine = created.info.run_id
        with self.runtime.db.begin() as conn:
            if db.claim_mlflow_run(conn, run_id, uri, experiment_id, mine):
                return _Target(client, experiment_id, mine)
            run = db.get_run(conn, run_id)
        client.delete_run(mine)  # another pusher created the run meanwhile: theirs is the one
        assert run.mlflow_run_id and run.mlflow_experiment_id
        theirs = run.tracking_uri or uri
        return _Target(self.client(theirs), run.mlflow_experiment_id, run.mlflow_run_id)

    def _experiment(self, client: Any, uri: str, name: str) -> Any:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        root = self.runtime.settings.embedded_artifact_root(uri)
        location = root.as_uri() if root is not None else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # created meanwhile by another pusher
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _nested_run(self, target: _Target, run_id: int, step: str) -> str:
        """The step's nested MLflow run, created (and claimed on the step row) on first use."""
        if step in target.steps:
            return target.steps[step]
        with self.runtime.db.begin() as conn:
            row = db.get_step(conn, run_id, step)
        nested = row.mlflow_run_id
        if nested is None:
            tags = {
                "mlflow.parentRunId": target.run_id,
                "modelyard.run_id": str(run_id),
                "modelyard.step": step,
                "modelyard.step_kind": row.kind,
            }
            started = int(row.started_at * 1000) if row.started_at else None
            created = target.client.create_run(
                target.experiment_id, start_time=started, tags=tags, run_name=step
            )
            nested = created.info.run_id
            with self.runtime.db.begin() as conn:
                won = db.claim_step_mlflow_run(conn, row.id, nested)
                theirs = None if won else db.get_step(conn, run_id, step).mlflow_run_id
            if theirs is not None:
                target.client.delete_run(nested)  # another pusher nested the step first
                nested = theirs
        target.steps[step] = nested
        return nested

    # -- records ---------------------------------------------------------------------------------

    def _apply(self, target: _Target, run_id: int, record: dict[str, Any]) -> None:
        kind, payload = record["kind"], record["payload"]
        step = payload.get("step")
        client = target.client
        if step is None:  # the run's own records, and step records queued before nested runs
            _log(client, target.run_id, kind, payload)
            return
        nested = self._nested_run(target, run_id, step)
        if kind in ("params", "metrics"):
            _log(client, nested, kind, payload)
            # the experiment's run list shows the pipeline runs: they carry `step.key` too
            _log(client, target.run_id, kind, _prefixed(step, kind, payload))
        elif kind == "artifact":
            self._log_output(client, nested, payload)
        elif kind == "step":
            if payload.get("cached"):
                client.set_tag(nested, "modelyard.cached", "true")
            status = MLFLOW_STATUS.get(payload["status"], "FINISHED")
            client.set_terminated(nested, status=status, end_time=payload.get("at"))

    def _log_output(self, client: Any, nested: str, payload: dict[str, Any]) -> None:
        """Log a step's output on its nested run, or, if too big, a tag naming its digest."""
        from modelyard.pipeline.model import REGISTER_OUTPUT
        from modelyard.store.artifacts import ArtifactRef

        name, always = payload["output"], bool(payload.get("always"))
        ref = ArtifactRef.from_json(payload["ref"])
        limit = self.runtime.settings.tracking_artifact_limit
        tag = f"modelyard.output.{name}"
        if not always and ref.size > limit:
            client.set_tag(nested, tag, f"{ref.digest} (not logged: {ref.size} bytes > {limit})")
            return
        with tempfile.TemporaryDirectory(prefix="modelyard-push-") as tmp:
            try:
                local = self.runtime.store.materialize(ref, Path(tmp) / name)
            except ArtifactError as exc:  # missing or corrupt in the store: retrying won't help
                client.set_tag(nested, tag, f"{ref.digest} (not logged: {exc.message})")
                return
            if ref.kind != "dir":
                client.log_artifact(nested, str(local))  # a file named after the output
                return
            path = PACKAGE_ARTIFACT_PATH if always and name == REGISTER_OUTPUT else name
            client.log_artifacts(nested, str(local), artifact_path=path)


def _prefixed(step: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    if kind == "params":
        return {"params": {f"{step}.{k}": v for k, v in payload["params"].items()}}
    return {"metrics": [[f"{step}.{k}", *rest] for k, *rest in payload["metrics"]]}


def _log(client: Any, mlflow_run_id: str, kind: str, payload: dict[str, Any]) -> None:
    from mlflow.entities import Metric, Param

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
def _exclusive(runtime: Runtime) -> Iterator[bool]:
    """One pusher at a time (a second one returns at once with False): per state folder, and on
    PostgreSQL per database, which the pushers of several machines share. (A SQLite database is
    a local file: the state folder's lock covers it.)"""
    with _state_dir_lock(runtime.settings) as here:
        if not here or runtime.db.dialect != "postgresql":
            yield here
            return
        with _database_lock(runtime.db) as acquired:
            yield acquired


@contextlib.contextmanager
def _state_dir_lock(settings: Settings) -> Iterator[bool]:
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


@contextlib.contextmanager
def _database_lock(database: Database) -> Iterator[bool]:
    """A PostgreSQL advisory lock, held by a dedicated connection for the whole push (if that
    pusher dies, its session ends and the server releases the lock)."""
    conn = None
    try:
        conn = database.engine.connect()
        acquired = bool(conn.execute(sa.text(_TRY_LOCK), {"key": PUSH_LOCK_KEY}).scalar())
        conn.commit()  # a session lock outlives the transaction; keep no transaction open
    except sa.exc.DBAPIError as exc:
        if conn is not None:
            conn.close()
        raise DatabaseError(
            f"cannot take the tracking push lock: {str(exc.orig).strip().splitlines()[0]}",
            where=database.safe_url,
            hint="check that the database is reachable",
        ) from None
    with conn:
        if not acquired:
            yield False
            return
        try:
            yield True
        finally:
            try:
                conn.execute(sa.text(_UNLOCK), {"key": PUSH_LOCK_KEY})
                conn.commit()
            except sa.exc.DBAPIError:
                conn.invalidate()  # the session is gone, and its lock with it


def _pusher_running(settings: Settings) -> bool:
    with _state_dir_lock(settings) as acquired:
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


def try_background_push(settings: Settings, project_dir: str | Path) -> str | None:
    """`start_background_push` for commands that must go on whatever happens (`run`, `worker`,
    `watch`): None, or a warning saying why the push did not start."""
    try:
        start_background_push(settings, project_dir)
    except Exception as exc:  # a full disk, a missing interpreter...: the records just wait
        why = redact(str(exc).strip() or type(exc).__name__)
        return f"cannot start the MLflow push ({why}); run `modelyard tracking push`"
    return None


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
