"""Reading and writing runs, step runs, attempts, events, cache entries and approvals.

All SQL about runs lives here; the engine decides *what* changes, this module knows *how*.
Functions take an open connection so callers group several changes into one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelyard.errors import NotFound
from modelyard.store import schema as t
from modelyard.store.artifacts import ArtifactRef

# step statuses
PENDING, RUNNING, WAITING = "pending", "running", "waiting"
SUCCEEDED, FAILED, SKIPPED, CANCELLED = "succeeded", "failed", "skipped", "cancelled"
STEP_DONE = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})
RUN_DONE = frozenset({SUCCEEDED, FAILED, CANCELLED})


@dataclass
class RunRow:
    id: int
    project: str
    project_dir: str
    pipeline: str
    status: str
    params: dict[str, Any]
    definition: dict[str, Any]
    options: dict[str, Any]
    environment_digest: str
    trigger: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    message: str | None
    owner: str | None
    lease_until: float | None
    cancel_requested: bool
    data_versions: dict[str, str] | None = None  # source -> manifest digest
    git_commit: str | None = None  # the project's git state at creation (None: not a repo)
    git_dirty: bool | None = None
    git_branch: str | None = None
    tracking_uri: str | None = None  # the MLflow tracking URI of the run (None: before 0004)
    mlflow_experiment_id: str | None = None  # set once the run is pushed to MLflow
    mlflow_run_id: str | None = None


@dataclass
class StepRow:
    id: int
    run_id: int
    name: str
    kind: str
    status: str
    cache_key: str | None
    cached: bool
    attempts: int
    failures: int
    not_before: float | None
    deadline: float | None
    started_at: float | None
    finished_at: float | None
    outputs: dict[str, Any] | None
    values: dict[str, Any] | None
    message: str | None
    mlflow_run_id: str | None = None  # the step's nested MLflow run, once pushed


@dataclass
class AttemptRow:
    id: int
    step_run_id: int
    number: int
    status: str
    host: str | None
    pid: int | None
    pid_started_at: float | None
    started_at: float
    finished_at: float | None
    exit_code: int | None
    error: str | None
    log_path: str | None
    log_digest: str | None


def _row(cls: type[Any], row: sa.Row[Any]) -> Any:
    return cls(**row._asdict())


# runs ------------------------------------------------------------------------------------------


def insert_run(conn: sa.Connection, **values: Any) -> int:
    result = conn.execute(t.runs.insert().values(created_at=time.time(), **values))
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def get_run(conn: sa.Connection, run_id: int) -> RunRow:
    row = conn.execute(sa.select(t.runs).where(t.runs.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"run {run_id} does not exist", hint="list the runs with `modelyard runs`")
    return _row(RunRow, row)  # type: ignore[no-any-return]


def list_runs(
    conn: sa.Connection,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    limit: int = 20,
) -> list[RunRow]:
    query = sa.select(t.runs).order_by(t.runs.c.id.desc()).limit(limit)
    if pipeline:
        query = query.where(t.runs.c.pipeline == pipeline)
    if status:
        query = query.where(t.runs.c.status == status)
    return [_row(RunRow, r) for r in conn.execute(query)]


def pipeline_used_data(
    conn: sa.Connection, project: str, pipeline: str, source: str, digest: str, since: float
) -> bool:
    """True if a run of `pipeline` created at or after `since` read `digest` of `source`."""
    rows = conn.execute(
        sa.select(t.runs.c.data_versions).where(
            t.runs.c.project == project,
            t.runs.c.pipeline == pipeline,
            t.runs.c.created_at >= since,
            t.runs.c.data_versions.is_not(None),
        )
    )
    return any((versions or {}).get(source) == digest for (versions,) in rows)


def update_run(conn: sa.Connection, run_id: int, **values: Any) -> None:
    conn.execute(t.runs.update().where(t.runs.c.id == run_id).values(**values))


def claim_mlflow_run(
    conn: sa.Connection, run_id: int, tracking_uri: str, experiment_id: str, mlflow_run_id: str
) -> bool:
    """Record the run's MLflow run unless another pusher recorded one first (then False)."""
    result = conn.execute(
        t.runs.update()
        .where(t.runs.c.id == run_id, t.runs.c.mlflow_run_id.is_(None))
        .values(
            tracking_uri=tracking_uri,
            mlflow_experiment_id=experiment_id,
            mlflow_run_id=mlflow_run_id,
        )
    )
    return result.rowcount == 1


def try_acquire(
    conn: sa.Connection, run_id: int, owner: str, lease_seconds: float, *, steal_from: str | None
) -> bool:
    """Take the run's lease if it is free, expired, or held by `steal_from` (a dead process).

    A lease held under `owner` itself is not free: it belongs to another driver of this process.
    """
    now = time.time()
    free = sa.or_(t.runs.c.owner.is_(None), t.runs.c.lease_until < now)
    if steal_from:
        free = sa.or_(free, t.runs.c.owner == steal_from)
    result = conn.execute(
        t.runs.update()
        .where(t.runs.c.id == run_id, free)
        .values(owner=owner, lease_until=now + lease_seconds)
    )
    return result.rowcount == 1


def renew_lease(conn: sa.Connection, run_id: int, owner: str, lease_seconds: float) -> bool:
    result = conn.execute(
        t.runs.update()
        .where(t.runs.c.id == run_id, t.runs.c.owner == owner)
        .values(lease_until=time.time() + lease_seconds)
    )
    return result.rowcount == 1


def release(conn: sa.Connection, run_id: int, owner: str) -> None:
    conn.execute(
        t.runs.update()
        .where(t.runs.c.id == run_id, t.runs.c.owner == owner)
        .values(owner=None, lease_until=None)
    )


def runs_needing_a_driver(conn: sa.Connection, now: float) -> list[RunRow]:
    """Runs left running or pending whose lease expired or never existed (their driver died)."""
    query = sa.select(t.runs).where(
        t.runs.c.status.in_(("pending", RUNNING)),
        sa.or_(t.runs.c.owner.is_(None), t.runs.c.lease_until < now),
    )
    return [_row(RunRow, r) for r in conn.execute(query.order_by(t.runs.c.id))]


def runs_with_expired_approvals(conn: sa.Connection, now: float) -> list[int]:
    query = (
        sa.select(t.step_runs.c.run_id)
        .where(
            t.step_runs.c.status == WAITING,
            t.step_runs.c.deadline.is_not(None),
            t.step_runs.c.deadline < now,
        )
        .distinct()
    )
    return [int(r[0]) for r in conn.execute(query)]


# steps -----------------------------------------------------------------------------------------


def insert_steps(conn: sa.Connection, run_id: int, steps: list[tuple[str, str]]) -> None:
    conn.execute(
        t.step_runs.insert(),
        [{"run_id": run_id, "name": n, "kind": k, "status": PENDING} for n, k in steps],
    )


def get_steps(conn: sa.Connection, run_id: int) -> dict[str, StepRow]:
    rows = conn.execute(
        sa.select(t.step_runs).where(t.step_runs.c.run_id == run_id).order_by(t.step_runs.c.id)
    )
    return {r.name: _row(StepRow, r) for r in rows}


def get_step(conn: sa.Connection, run_id: int, name: str) -> StepRow:
    row = conn.execute(
        sa.select(t.step_runs).where(t.step_runs.c.run_id == run_id, t.step_runs.c.name == name)
    ).one()
    return _row(StepRow, row)  # type: ignore[no-any-return]


def update_step(conn: sa.Connection, step_id: int, **values: Any) -> None:
    conn.execute(t.step_runs.update().where(t.step_runs.c.id == step_id).values(**values))


def claim_step_mlflow_run(conn: sa.Connection, step_id: int, mlflow_run_id: str) -> bool:
    """Record the step's nested MLflow run unless another pusher recorded one first (then False)."""
    result = conn.execute(
        t.step_runs.update()
        .where(t.step_runs.c.id == step_id, t.step_runs.c.mlflow_run_id.is_(None))
        .values(mlflow_run_id=mlflow_run_id)
    )
    return result.rowcount == 1


# attempts --------------------------------------------------------------------------------------


def insert_attempt(conn: sa.Connection, **values: Any) -> int:
    pk = conn.execute(t.attempts.insert().values(**values)).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def update_attempt(conn: sa.Connection, attempt_id: int, **values: Any) -> None:
    conn.execute(t.attempts.update().where(t.attempts.c.id == attempt_id).values(**values))


def get_attempts(conn: sa.Connection, step_id: int) -> list[AttemptRow]:
    rows = conn.execute(
        sa.select(t.attempts)
        .where(t.attempts.c.step_run_id == step_id)
        .order_by(t.attempts.c.number)
    )
    return [_row(AttemptRow, r) for r in rows]


def running_attempts(conn: sa.Connection, run_id: int) -> list[tuple[str, AttemptRow]]:
    rows = conn.execute(
        sa.select(t.step_runs.c.name, t.attempts)
        .join(t.step_runs, t.step_runs.c.id == t.attempts.c.step_run_id)
        .where(t.step_runs.c.run_id == run_id, t.attempts.c.status == RUNNING)
    )
    result = []
    for row in rows:
        data = row._asdict()
        name = data.pop("name")
        result.append((name, AttemptRow(**data)))
    return result


# artifacts and cache ---------------------------------------------------------------------------


def get_artifact(conn: sa.Connection, digest: str) -> ArtifactRef | None:
    """The artifact a digest names, as recorded when a step stored it (None: not recorded)."""
    row = conn.execute(sa.select(t.artifacts).where(t.artifacts.c.digest == digest)).first()
    if row is None:
        return None
    return ArtifactRef(digest=row.digest, kind=row.kind, size=row.size)


def record_artifacts(conn: sa.Connection, refs: list[dict[str, Any]]) -> None:
    """Insert artifact rows, ignoring those already known (digests are content addresses)."""
    if not refs:
        return
    digests = {r["digest"] for r in refs}
    known = set(
        conn.execute(
            sa.select(t.artifacts.c.digest).where(t.artifacts.c.digest.in_(digests))
        ).scalars()
    )
    now = time.time()
    new = {r["digest"]: r for r in refs if r["digest"] not in known}
    if new:
        conn.execute(
            t.artifacts.insert(),
            [
                {"digest": d, "kind": r["kind"], "size": r["size"], "created_at": now}
                for d, r in new.items()
            ],
        )


def get_cache_entry(conn: sa.Connection, key: str) -> sa.Row[Any] | None:
    return conn.execute(
        sa.select(t.cache_entries).where(t.cache_entries.c.cache_key == key)
    ).first()


def put_cache_entry(
    conn: sa.Connection,
    key: str,
    step: str,
    outputs: dict[str, Any],
    values: dict[str, Any],
    run_id: int,
) -> None:
    conn.execute(t.cache_entries.delete().where(t.cache_entries.c.cache_key == key))
    conn.execute(
        t.cache_entries.insert().values(
            cache_key=key,
            step=step,
            outputs=outputs,
            values=values,
            run_id=run_id,
            created_at=time.time(),
        )
    )


def delete_cache_entry(conn: sa.Connection, key: str) -> None:
    conn.execute(t.cache_entries.delete().where(t.cache_entries.c.cache_key == key))


# approvals -------------------------------------------------------------------------------------


def get_approval(conn: sa.Connection, step_id: int) -> sa.Row[Any] | None:
    return conn.execute(sa.select(t.approvals).where(t.approvals.c.step_run_id == step_id)).first()


def insert_approval(conn: sa.Connection, **values: Any) -> None:
    conn.execute(t.approvals.insert().values(decided_at=time.time(), **values))


# events ----------------------------------------------------------------------------------------


def add_event(
    conn: sa.Connection, run_id: int, kind: str, message: str = "", step: str | None = None
) -> None:
    conn.execute(
        t.events.insert().values(
            run_id=run_id, step=step, kind=kind, message=message, at=time.time()
        )
    )


def get_events(conn: sa.Connection, run_id: int, after_id: int = 0) -> list[sa.Row[Any]]:
    return list(
        conn.execute(
            sa.select(t.events)
            .where(t.events.c.run_id == run_id, t.events.c.id > after_id)
            .order_by(t.events.c.id)
        )
    )
