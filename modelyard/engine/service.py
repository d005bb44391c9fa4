"""Service functions: what the CLI (and later the HTTP API) call to act on runs.

Each function validates its input, changes state in one place and returns plain data. The CLI
renders the result; nothing here prints.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modelyard.errors import ConfigError, NotFound, StateConflict
from modelyard.pipeline.params import resolve_params
from modelyard.store import runs as db

from .approvals import decide_version_of_step
from .runtime import Runtime, owner_is_dead

if TYPE_CHECKING:
    from modelyard.pipeline.model import Pipeline
    from modelyard.project.loader import Project
    from modelyard.tracking.links import Link

    from .driver import Observer


@dataclass(frozen=True)
class RunOptions:
    no_cache: bool = False
    no_cache_steps: tuple[str, ...] = ()
    max_parallel: int | None = None
    trigger: str = "manual"
    # source -> digest: data versions to use instead of snapshotting (a data trigger's version)
    data_versions: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "no_cache": self.no_cache,
            "no_cache_steps": list(self.no_cache_steps),
            "max_parallel": self.max_parallel,
        }


def create_run(
    runtime: Runtime,
    project: Project,
    pipeline_name: str,
    overrides: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
) -> int:
    """Record a new run (pending) with its frozen definition and parameters; nothing runs yet."""
    options = options or RunOptions()
    pipeline = project.pipeline(pipeline_name)
    unknown = [s for s in options.no_cache_steps if s not in pipeline.steps]
    if unknown:
        raise ConfigError(
            f"--no-cache-step: pipeline '{pipeline_name}' has no step '{unknown[0]}'",
            hint="the steps are: " + ", ".join(pipeline.steps),
        )
    params = resolve_params(pipeline, overrides or {})
    data_versions = _data_versions(runtime, project, pipeline, options.data_versions)
    from modelyard.project.gitinfo import git_state

    from .environment import environment_digest

    env_digest = environment_digest(project.root, project.environment_lock)
    # the code's state now, before any step runs: a registered model's lineage names it
    git = git_state(project.root)
    with runtime.db.begin() as conn:
        run_id = db.insert_run(
            conn,
            project=project.name,
            project_dir=str(project.root),
            pipeline=pipeline_name,
            status=db.PENDING,
            params=params,
            definition=pipeline.to_json(),
            options=options.to_json(),
            environment_digest=env_digest,
            trigger=options.trigger,
            data_versions=data_versions or None,
            git_commit=git.commit if git else None,
            git_dirty=git.dirty if git else None,
            git_branch=git.branch if git else None,
            tracking_uri=runtime.settings.effective_tracking_uri,
        )
        from modelyard.tracking.records import record_run_params

        record_run_params(conn, run_id, params)  # queued for MLflow with the run's creation
        if data_versions:
            from modelyard.store import dataversions

            dataversions.mark_first_use(conn, project.name, data_versions, run_id)
        db.insert_steps(conn, run_id, [(s.name, s.kind) for s in pipeline.steps.values()])
        db.add_event(conn, run_id, "run-created", f"trigger: {options.trigger}")
    return run_id


def _data_versions(
    runtime: Runtime, project: Project, pipeline: Pipeline, given: Mapping[str, str]
) -> dict[str, str]:
    """The data version of each source the pipeline reads: the given one, or a new snapshot."""
    from modelyard.pipeline.dag import referenced_data
    from modelyard.store import dataversions
    from modelyard.store.manifests import take_snapshot

    versions: dict[str, str] = {}
    for source, digest in given.items():
        if source not in pipeline.data_sources:
            raise ConfigError(
                f"pipeline '{pipeline.name}' neither reads nor is triggered by data source "
                f"'{source}'",
                hint="add it to the pipeline's triggers or to a step's inputs",
            )
        with runtime.db.begin() as conn:
            known = dataversions.get_version(conn, project.name, source, digest)
        if known is None:
            raise NotFound(
                f"data source '{source}' has no recorded version {digest}",
                hint=f"see the versions with `modelyard data versions {source}`",
            )
        versions[source] = digest
    read: set[str] = set()
    for step in pipeline.steps.values():
        read |= referenced_data(step)
    for name in sorted(read - set(versions)):
        # lint makes sure every source a step reads is declared, so the pipeline carries it
        definition = pipeline.data_sources[name]
        snapshot = take_snapshot(runtime.db, runtime.store, project.name, project.root, definition)
        versions[name] = snapshot.version.digest
    return versions


def drive_run(runtime: Runtime, run_id: int, observer: Observer | None = None) -> db.RunRow:
    from .driver import RunDriver

    return RunDriver(runtime, run_id, observer).drive()


def resume_run(runtime: Runtime, run_id: int, observer: Observer | None = None) -> db.RunRow:
    """Re-run failed, cancelled and unfinished steps of a run; finished steps are kept."""
    with runtime.db.begin() as conn:
        run = db.get_run(conn, run_id)
        if run.status == db.SUCCEEDED:
            raise StateConflict(
                f"run {run_id} has already succeeded: there is nothing to resume",
                hint=f"start a new run: modelyard run {run.pipeline}",
            )
        if run.owner and not owner_is_dead(run.owner) and (run.lease_until or 0) > time.time():
            raise StateConflict(
                f"run {run_id} is being advanced by another process ({run.owner})",
                hint="wait for it to finish, or stop it with `modelyard cancel`",
            )
        reopened = []
        for row in db.get_steps(conn, run_id).values():
            if row.status in (db.FAILED, db.CANCELLED):
                db.update_step(
                    conn,
                    row.id,
                    status=db.PENDING,
                    failures=0,
                    not_before=None,
                    finished_at=None,
                    message="resumed",
                )
                reopened.append(row.name)
        db.update_run(
            conn,
            run_id,
            status=db.RUNNING,
            finished_at=None,
            cancel_requested=False,
            message=None,
        )
        db.add_event(conn, run_id, "run-resumed", ", ".join(reopened))
    return drive_run(runtime, run_id, observer)


def request_cancel(runtime: Runtime, run_id: int) -> str:
    """Cancel a run: its driver stops it, or, if none is alive, it is cancelled here."""
    with runtime.db.begin() as conn:
        run = db.get_run(conn, run_id)
        if run.status in db.RUN_DONE:
            raise StateConflict(f"run {run_id} has already finished ({run.status})")
        db.update_run(conn, run_id, cancel_requested=True)
        driven = (
            bool(run.owner)
            and not owner_is_dead(run.owner)
            and ((run.lease_until or 0) > time.time())
        )
    if driven:
        return "requested"
    from .driver import mark_cancelled

    mark_cancelled(runtime, run_id)
    return "cancelled"


def decide_approval(
    runtime: Runtime,
    run_id: int,
    step: str,
    *,
    approve: bool,
    comment: str = "",
    actor: str | None = None,
) -> db.StepRow:
    """Record a person's decision on a waiting approval step (once; it cannot be changed)."""
    actor = actor or _current_user()
    with runtime.db.begin() as conn:
        run = db.get_run(conn, run_id)  # raises NotFound for an unknown run
        steps = db.get_steps(conn, run_id)
        row = steps.get(step)
        if row is None:
            raise NotFound(f"run {run_id} has no step '{step}'", hint="steps: " + ", ".join(steps))
        if row.kind != "approval":
            raise StateConflict(
                f"step '{step}' of run {run_id} is a {row.kind} step, not an approval",
                hint="approve the run's approval step: " + _approval_steps(steps),
            )
        if db.get_approval(conn, row.id) is not None or row.status in db.STEP_DONE:
            raise StateConflict(
                f"step '{step}' of run {run_id} has already been decided ({row.status}):"
                f" {row.message or ''}".rstrip(": "),
            )
        if row.status != db.WAITING:
            raise StateConflict(
                f"step '{step}' of run {run_id} is not waiting for approval (it is {row.status})",
                hint="a step can be approved once the steps before it have finished",
            )
        if row.deadline is not None and row.deadline < time.time():
            raise StateConflict(f"the approval of step '{step}' has timed out")
        # A step that approves a version decides it first: the version's row is locked before
        # the step's approval (the order `models approve` takes too, so the two cannot deadlock),
        # and deciding the version records this step's approval with it.
        decide_version_of_step(
            conn, run.project, row, approve=approve, comment=comment, actor=actor
        )
        if db.get_approval(conn, row.id) is None:
            try:
                db.insert_approval(
                    conn,
                    step_run_id=row.id,
                    run_id=run_id,
                    decision="approved" if approve else "rejected",
                    actor=actor,
                    comment=comment,
                )
            except sa.exc.IntegrityError:
                raise StateConflict(
                    f"step '{step}' of run {run_id} was just decided by someone else"
                ) from None
        db.add_event(conn, run_id, "approval-recorded", f"{actor}: {comment}", step)
    return row


def continue_after_decision(
    runtime: Runtime, run_id: int, observer: Observer | None = None
) -> db.RunRow | None:
    """Advance the run after a decision, unless another live process already drives it."""
    with runtime.db.begin() as conn:
        run = db.get_run(conn, run_id)
    if run.owner and not owner_is_dead(run.owner) and (run.lease_until or 0) > time.time():
        return None  # its driver sees the decision at its next poll
    return drive_run(runtime, run_id, observer)


def expire_approvals(runtime: Runtime, observer: Observer | None = None) -> list[int]:
    """Fail the runs whose approval timed out while nobody was driving them."""
    with runtime.db.begin() as conn:
        run_ids = db.runs_with_expired_approvals(conn, time.time())
    for run_id in run_ids:
        drive_run(runtime, run_id, observer)
    return run_ids


def orphaned_runs(runtime: Runtime) -> list[db.RunRow]:
    with runtime.db.begin() as conn:
        candidates = db.runs_needing_a_driver(conn, time.time())
        running = [
            r for r in db.list_runs(conn, status=db.RUNNING, limit=1000) if owner_is_dead(r.owner)
        ]
    return list({r.id: r for r in [*candidates, *running]}.values())


def list_runs(
    runtime: Runtime, pipeline: str | None = None, status: str | None = None, limit: int = 20
) -> list[db.RunRow]:
    with runtime.db.begin() as conn:
        return db.list_runs(conn, pipeline=pipeline, status=status, limit=limit)


@dataclass
class RunDetail:
    run: db.RunRow
    steps: dict[str, db.StepRow]
    attempts: dict[str, list[db.AttemptRow]]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # step -> last values


def run_detail(runtime: Runtime, run_id: int) -> RunDetail:
    from modelyard.tracking.records import step_metrics

    with runtime.db.begin() as conn:
        run = db.get_run(conn, run_id)
        steps = db.get_steps(conn, run_id)
        attempts = {name: db.get_attempts(conn, row.id) for name, row in steps.items()}
        metrics = step_metrics(conn, run_id)
    return RunDetail(run, steps, attempts, metrics)


def tracking_link(runtime: Runtime, run_id: int) -> Link | None:
    """The MLflow link of a run (its hint says "not pushed yet" until the pusher has created the
    MLflow run); None if the run no longer exists."""
    from modelyard.tracking import records

    try:
        with runtime.db.begin() as conn:
            return records.tracking_link(conn, run_id, runtime.settings)
    except NotFound:
        return None


def attempt_log(
    runtime: Runtime, run_id: int, step: str, attempt: int | None = None
) -> tuple[db.AttemptRow, Path | None]:
    """The attempt (latest by default) and its log file, if it is on this machine."""
    detail = run_detail(runtime, run_id)
    if step not in detail.steps:
        raise NotFound(
            f"run {run_id} has no step '{step}'", hint="steps: " + ", ".join(detail.steps)
        )
    attempts = detail.attempts[step]
    if not attempts:
        raise NotFound(
            f"step '{step}' of run {run_id} has no attempts (it is {detail.steps[step].status})",
            hint="steps taken from the cache, conditions and approvals have no logs",
        )
    chosen = (
        attempts[-1]
        if attempt is None
        else next((a for a in attempts if a.number == attempt), None)
    )
    if chosen is None:
        raise NotFound(f"step '{step}' has no attempt {attempt} (it has {len(attempts)})")
    path = Path(chosen.log_path) if chosen.log_path else None
    return chosen, path if path is not None and path.exists() else None


def _approval_steps(steps: Mapping[str, db.StepRow]) -> str:
    names = [n for n, s in steps.items() if s.kind == "approval"]
    return ", ".join(names) or "(this run has none)"


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
