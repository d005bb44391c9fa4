"""Advancing one run: the scheduler loop.

The run's state lives in the metadata DB; the driver holds the run's lease (renewed by a
heartbeat), starts ready steps up to the parallelism limit, records every transition in a
transaction, and stops when the run ends or waits for a person. Any process can drive a run: after
a crash, the next driver recovers the attempts that were in flight and carries on.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from modelyard.errors import ExpressionError, ModelyardError, StateConflict
from modelyard.executors.base import Handle, StepResult, StepTask
from modelyard.executors.processes import is_same_process, kill_tree
from modelyard.pipeline.dag import Dag
from modelyard.pipeline.expressions import Expression
from modelyard.pipeline.model import Pipeline, Step
from modelyard.pipeline.templates import render
from modelyard.store import runs as db
from modelyard.store.artifacts import ArtifactRef

from .evaluation import evaluate, explain, expression_context
from .planning import plan
from .preparation import PreparedStep, prepare_step
from .runtime import Runtime, owner_is_dead, process_identity

if TYPE_CHECKING:
    # imported where a register or deploy step runs: most pipelines have none, and every CLI
    # run pays for what the driver imports
    from modelyard.tracking.records import Logged

    from .deployment import PreparedDeployment
    from .registration import PreparedRegistration

    Prepared = PreparedStep | PreparedRegistration | PreparedDeployment

Observer = Callable[[str, str | None, str], None]
CONTROL_POLL_SECONDS = 0.25


@dataclass
class _InFlight:
    step: str
    attempt_id: int
    prepared: Prepared
    handle: Handle | None = None


@dataclass
class _Finished:
    task: StepTask
    result: StepResult
    stored: dict[str, dict[str, Any]] | None = None
    log_digest: str | None = None
    store_error: str | None = None
    logged: Logged | None = None  # the metrics and parameters the step logged


class RunDriver:
    def __init__(self, runtime: Runtime, run_id: int, observer: Observer | None = None):
        self.runtime = runtime
        self.run_id = run_id
        self.observer = observer
        self.owner = process_identity()
        self.events: queue.Queue[_Finished] = queue.Queue()
        self.in_flight: dict[str, _InFlight] = {}
        self.lost_lease = threading.Event()
        self._stop_heartbeat = threading.Event()

    # -- lease -----------------------------------------------------------------------------------

    def acquire(self) -> None:
        lease = self.runtime.settings.lease_seconds
        with self.runtime.db.begin() as conn:
            run = db.get_run(conn, self.run_id)
            if run.status in db.RUN_DONE:
                raise StateConflict(
                    f"run {self.run_id} has already finished ({run.status})",
                    hint="start a new run with `modelyard run`",
                )
            steal = run.owner if owner_is_dead(run.owner) else None
            if not db.try_acquire(conn, self.run_id, self.owner, lease, steal_from=steal):
                raise StateConflict(
                    f"run {self.run_id} is being advanced by another process ({run.owner})",
                    hint="wait for it, or stop it with `modelyard cancel`",
                )

    def _heartbeat(self) -> None:
        lease = self.runtime.settings.lease_seconds
        while not self._stop_heartbeat.wait(lease / 3):
            try:
                with self.runtime.db.begin() as conn:
                    if not db.renew_lease(conn, self.run_id, self.owner, lease):
                        self.lost_lease.set()
                        return
            except ModelyardError:
                continue  # a transient DB error: the lease has slack for the next try

    # -- the loop --------------------------------------------------------------------------------

    def drive(self) -> db.RunRow:
        self.acquire()
        heartbeat = threading.Thread(target=self._heartbeat, name="lease", daemon=True)
        heartbeat.start()
        try:
            with self.runtime.db.begin() as conn:
                run = db.get_run(conn, self.run_id)
                self._recover_lost_attempts(conn)
                if run.status != db.RUNNING:
                    db.update_run(
                        conn,
                        self.run_id,
                        status=db.RUNNING,
                        started_at=run.started_at or time.time(),
                    )
                    db.add_event(conn, self.run_id, "run-started")
            self.run = run
            self.pipeline = Pipeline.from_json(run.definition)
            self.dag = Dag(self.pipeline)
            self._notify("run-started", None, f"{run.pipeline} (run {self.run_id})")
            self._loop()
        finally:
            self._stop_heartbeat.set()
            heartbeat.join()
            for flight in list(self.in_flight.values()):
                if flight.handle is not None:
                    flight.handle.cancel()
            with self.runtime.db.begin() as conn:
                db.release(conn, self.run_id, self.owner)
        with self.runtime.db.begin() as conn:
            return db.get_run(conn, self.run_id)

    def _loop(self) -> None:
        next_control = 0.0
        while True:
            now = time.time()
            if self.lost_lease.is_set():
                raise StateConflict(
                    f"run {self.run_id} was taken over by another process",
                    hint="see `modelyard show` for its state",
                )
            if now >= next_control:
                next_control = now + CONTROL_POLL_SECONDS
                if self._cancel_requested():
                    self._cancel()
                    return
            wake_at = self._advance()
            if wake_at is None:
                return
            timeout = max(0.0, min(wake_at, next_control) - time.time())
            try:
                finished = self.events.get(timeout=timeout)
            except queue.Empty:
                continue
            self._complete(finished)
            while True:  # record everything that finished meanwhile before planning again
                try:
                    self._complete(self.events.get_nowait())
                except queue.Empty:
                    break

    def _advance(self) -> float | None:
        """Start what can start; return when to look again, or None when the run has settled."""
        run = self.run  # params, definition and options never change during a run
        with self.runtime.db.begin() as conn:
            steps = db.get_steps(conn, self.run_id)
            if self._apply_approval_decisions(conn, steps):
                steps = db.get_steps(conn, self.run_id)
        decision = plan(self.dag, steps, time.time())
        if decision.skip:
            skip = {
                name: self._skip_message(name, why, steps) for name, why in decision.skip.items()
            }
            with self.runtime.db.begin() as conn:
                for name, reason in skip.items():
                    db.update_step(
                        conn,
                        steps[name].id,
                        status=db.SKIPPED,
                        message=reason,
                        finished_at=time.time(),
                    )
                    db.add_event(conn, self.run_id, "step-skipped", reason, name)
            for name, reason in skip.items():
                self._notify("step-skipped", name, reason)
            return time.time()
        failed = decision.failed
        limit = self._max_parallel(run)
        started = False
        if not failed:
            for name in decision.ready:
                step = self.pipeline.steps[name]
                if step.runs_a_process and len(self.in_flight) >= limit:
                    break
                if name in self.in_flight:
                    continue
                self._start(run, step, steps)
                started = True
        if started:
            return time.time()
        if self.in_flight:
            return decision.wake_at or time.time() + 3600
        if decision.ready and not failed:
            return time.time()
        if decision.retry_at is not None and not failed:
            return decision.retry_at
        self._settle(run, steps, decision.waiting)
        return None

    def _skip_message(self, name: str, reason: str, steps: dict[str, db.StepRow]) -> str:
        """Why a step is skipped; a deploy step whose register step registered nothing says why
        not (the gate's reason), whichever of its dependencies the planner named."""
        step = self.pipeline.steps[name]
        if step.kind != "deploy":
            return reason
        from .deployment import nothing_to_deploy

        why = nothing_to_deploy(step, steps)
        return f"nothing to deploy: {why}" if why is not None else reason

    def _max_parallel(self, run: db.RunRow) -> int:
        return int(
            run.options.get("max_parallel")
            or self.pipeline.max_parallel
            or self.runtime.settings.max_parallel
        )

    # -- starting steps --------------------------------------------------------------------------

    def _start(self, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]) -> None:
        if step.kind == "condition":
            self._run_condition(run, step, steps)
        elif step.kind == "fail":
            self._run_fail(run, step, steps)
        elif step.kind == "approval":
            self._open_approval(run, step, steps)
        elif step.kind == "register":
            self._start_register(run, step, steps)
        elif step.kind == "deploy":
            self._start_deploy(run, step, steps)
        else:
            self._start_compute(run, step, steps)

    def _run_condition(self, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]) -> None:
        assert step.condition is not None
        row = steps[step.name]
        context = expression_context(run, steps)
        expression = Expression.parse(step.condition)
        try:
            result = evaluate(expression, context, self.runtime.store)
        except ExpressionError as exc:
            self._finish_step(row, db.FAILED, f"condition error: {exc.message}")
            return
        outcome = bool(result)
        chosen = step.then if outcome else step.otherwise
        message = str(outcome).lower()
        operands = explain(expression, context, self.runtime.store)
        if operands:
            message += f" ({operands})"
        if chosen:
            message += "; runs " + ", ".join(chosen)
        self._finish_step(row, db.SUCCEEDED, message, values={"result": outcome})

    def _run_fail(self, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]) -> None:
        context = expression_context(run, steps)
        try:
            message = str(render(step.message, lambda e: evaluate(e, context, self.runtime.store)))
        except ExpressionError as exc:
            message = f"{step.message} (could not render: {exc.message})"
        self._finish_step(steps[step.name], db.FAILED, message)

    def _open_approval(self, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]) -> None:
        row = steps[step.name]
        if row.status == db.WAITING:
            return
        message = step.message or "waiting for approval"
        values = None
        if step.approves is not None:
            from .approvals import version_to_approve

            target = version_to_approve(self.runtime, run, step, steps)
            decided = target.decided
            if decided is not None:  # decided before the step opened: nothing to wait for
                message = decided.message
                if decided.approved:
                    with self.runtime.db.begin() as conn:
                        opened = replace(row, values=target.values)
                        message += self._alias_on_approval(conn, opened, decided.actor)
                status = db.SUCCEEDED if decided.approved else db.FAILED
                self._finish_step(row, status, message, values=target.values)
                return
            values = target.values
            message = f"{step.message} ({target.label})" if step.message else target.prompt
        now = time.time()
        deadline = now + step.approval_timeout if step.approval_timeout else None
        with self.runtime.db.begin() as conn:
            db.update_step(
                conn,
                row.id,
                status=db.WAITING,
                started_at=now,
                deadline=deadline,
                message=message,
                values=values,
            )
            db.add_event(conn, self.run_id, "approval-waiting", message, step.name)
        hint = f"modelyard approve {self.run_id} {step.name} --comment '...'"
        if values is not None:
            hint = f"evidence: modelyard evidence {self.run_id}; then {hint}"
        self._notify("approval-waiting", step.name, f"{message} ({hint})")

    def _apply_approval_decisions(self, conn: Any, steps: dict[str, db.StepRow]) -> bool:
        """Apply recorded decisions and expired deadlines to waiting steps; True if any changed."""
        now = time.time()
        changed = False
        for row in steps.values():
            if row.status != db.WAITING:
                continue
            decision = db.get_approval(conn, row.id)
            if decision is not None:
                approved = decision.decision == "approved"
                verb = "approved" if approved else "rejected"
                message = f"{verb} by {decision.actor}"
                if decision.comment:
                    message += f": {decision.comment}"
                status = db.SUCCEEDED if approved else db.FAILED
                if approved:
                    message += self._alias_on_approval(conn, row, decision.actor)
                db.update_step(conn, row.id, status=status, message=message, finished_at=now)
                db.add_event(conn, self.run_id, f"approval-{verb}", message, row.name)
                _queue_step_end(conn, self.run_id, row, status, now)
                self._notify(f"step-{status}", row.name, message)
                changed = True
            elif row.deadline is not None and row.deadline < now:
                message = "approval timed out: nobody approved or rejected it in time"
                db.update_step(conn, row.id, status=db.FAILED, message=message, finished_at=now)
                db.add_event(conn, self.run_id, "approval-timed-out", message, row.name)
                _queue_step_end(conn, self.run_id, row, db.FAILED, now)
                self._notify("step-failed", row.name, message)
                changed = True
        return changed

    def _alias_on_approval(self, conn: Any, row: db.StepRow, actor: str) -> str:
        """Point the step's `alias_on_approval` at the approved version; what to add to the
        step's message."""
        alias = self.pipeline.steps[row.name].alias_on_approval
        values = row.values or {}
        if alias is None or "version" not in values:
            return ""
        from modelyard.registry.service import set_alias_in

        model, number = str(values["model"]), int(values["version"])
        try:
            with conn.begin_nested():  # a refused alias must not undo the decision
                set_alias_in(conn, self.run.project, model, alias, number, actor)
        except ModelyardError as exc:
            return f" (alias {alias} not set: {exc.message})"
        return f"; {model}@{alias} -> {number}"

    def _start_compute(self, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]) -> None:
        row = steps[step.name]
        try:
            prepared = prepare_step(self.runtime, run, step, steps)
        except ModelyardError as exc:
            self._finish_step(row, db.FAILED, str(exc))
            return
        no_cache = run.options.get("no_cache") or step.name in run.options.get("no_cache_steps", [])
        if step.cache and not no_cache and self._try_cache(run, row, prepared.cache_key):
            return
        self._launch(row, step, prepared)

    def _start_register(self, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]) -> None:
        """Check the gate first (a refused version costs no packaging), then package in a child
        process; the version is recorded when that attempt completes (`_complete`)."""
        from .registration import not_registered, prepare_registration

        row = steps[step.name]
        assert step.registration is not None
        try:
            prepared = prepare_registration(self.runtime, run, step, steps)
            report = prepared.check_gate()
        except ModelyardError as exc:
            self._finish_step(row, db.FAILED, str(exc))
            return
        if not report.passed:
            values = not_registered(step.registration, report.reason)
            self._finish_step(row, db.SUCCEEDED, f"not registered: {report.reason}", values=values)
            return
        self._launch(row, step, prepared)

    def _start_deploy(self, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]) -> None:
        """Deploy the version the step's register step made, in a child process that waits for
        the rollout; nothing registered (its gate refused): skipped, as the run goes on."""
        from .deployment import nothing_to_deploy, prepare_deployment

        row = steps[step.name]
        why = nothing_to_deploy(step, steps)
        if why is not None:
            self._skip(row, f"nothing to deploy: {why}")
            return
        try:
            prepared = prepare_deployment(self.runtime, run, step, steps)
        except ModelyardError as exc:
            self._finish_step(row, db.FAILED, str(exc))
            return
        self._launch(row, step, prepared)

    def _skip(self, row: db.StepRow, reason: str) -> None:
        """Skip a step that was about to start, as the planner skips steps."""
        with self.runtime.db.begin() as conn:
            db.update_step(conn, row.id, status=db.SKIPPED, message=reason, finished_at=time.time())
            db.add_event(conn, self.run_id, "step-skipped", reason, row.name)
        self._notify("step-skipped", row.name, reason)

    def _launch(self, row: db.StepRow, step: Step, prepared: Prepared) -> None:
        """Record a new attempt of the step and start it on its executor."""
        number = row.attempts + 1
        try:
            task = prepared.task_for_attempt(self.runtime.settings, number)
        except ModelyardError as exc:
            self._finish_step(row, db.FAILED, f"cannot prepare attempt {number}: {exc}")
            return
        now = time.time()
        with self.runtime.db.begin() as conn:
            attempt_id = db.insert_attempt(
                conn,
                step_run_id=row.id,
                number=number,
                status=db.RUNNING,
                host=self.owner.split(":")[0],
                started_at=now,
                log_path=str(task.log_path),
            )
            db.update_step(
                conn,
                row.id,
                status=db.RUNNING,
                attempts=number,
                cache_key=prepared.cache_key,
                started_at=row.started_at or now,
                not_before=None,
                message=None,
            )
            db.add_event(conn, self.run_id, "step-started", f"attempt {number}", step.name)
        flight = _InFlight(step.name, attempt_id, prepared)
        self.in_flight[step.name] = flight
        self._notify("step-started", step.name, f"attempt {number}")
        flight.handle = prepared.executor().start(task, self._on_done)
        if flight.handle.pid is not None:
            from modelyard.executors.processes import start_time

            with self.runtime.db.begin() as conn:
                db.update_attempt(
                    conn,
                    attempt_id,
                    pid=flight.handle.pid,
                    pid_started_at=start_time(flight.handle.pid),
                )

    def _try_cache(self, run: db.RunRow, row: db.StepRow, key: str) -> bool:
        with self.runtime.db.begin() as conn:
            entry = db.get_cache_entry(conn, key)
        if entry is None:
            return False
        refs = [ArtifactRef.from_json(r) for r in entry.outputs.values()]
        if not all(self.runtime.store.verify(ref) for ref in refs):
            for ref in refs:  # so that running the step again stores them anew
                self.runtime.store.discard_damaged(ref)
            with self.runtime.db.begin() as conn:
                db.delete_cache_entry(conn, key)
                db.add_event(
                    conn,
                    self.run_id,
                    "cache-invalid",
                    "a cached output is missing or corrupt: running the step again",
                    row.name,
                )
            self._notify("cache-invalid", row.name, "cached output missing or corrupt: re-running")
            return False
        message = f"cache hit (outputs of run {entry.run_id})"
        self._finish_step(
            row,
            db.SUCCEEDED,
            message,
            outputs=entry.outputs,
            values=entry._mapping["values"],
            cached=True,
            cache_key=key,
        )
        return True

    def _on_done(self, task: StepTask, result: StepResult) -> None:
        """Called from an executor thread: store outputs here, off the scheduler's thread."""
        finished = _Finished(task, result)
        store = self.runtime.store
        if result.ok and task.metrics_file.exists():
            finished.logged = _read_logged(task)
        try:
            if task.log_path.exists():
                finished.log_digest = store.put_file(task.log_path).digest
            if result.ok:
                stored = {
                    name: store.put_path(path).to_json() for name, path in task.outputs.items()
                }
                for value in result.values.values():
                    store.put_value(value)
                finished.stored = stored
        except ModelyardError as exc:
            finished.store_error = f"storing the outputs failed: {exc}"
        except OSError as exc:
            finished.store_error = f"storing the outputs failed: {exc}"
        self.events.put(finished)

    # -- completing steps ------------------------------------------------------------------------

    def _complete(self, finished: _Finished) -> None:
        task, result = finished.task, finished.result
        flight = self.in_flight.pop(task.step)
        step = self.pipeline.steps[task.step]
        ok = result.ok and finished.store_error is None
        error = finished.store_error or result.error
        attempt_status = (
            "succeeded"
            if ok
            else (
                "cancelled" if result.cancelled else "timed-out" if result.timed_out else "failed"
            )
        )
        now = time.time()
        with self.runtime.db.begin() as conn:
            row = db.get_step(conn, self.run_id, task.step)
            db.update_attempt(
                conn,
                flight.attempt_id,
                status=attempt_status,
                finished_at=now,
                exit_code=result.exit_code,
                error=error,
                log_digest=finished.log_digest,
            )
            values, message, retryable = result.values, None, True
            if ok and step.kind == "register":
                from .registration import PreparedRegistration

                assert finished.stored is not None
                assert isinstance(flight.prepared, PreparedRegistration)
                values, message, registration_error = self._record_version(
                    conn, flight.prepared, finished.stored, result.values
                )
                if registration_error is not None:  # packaging again would not change it
                    ok, error, retryable = False, registration_error, False
            if ok and step.kind == "deploy":
                message = _deployed_message(values)
            if ok:
                assert finished.stored is not None
                refs = list(finished.stored.values())
                db.record_artifacts(conn, refs)
                if step.cache and step.kind != "register":  # a registration is never reused
                    assert flight.prepared.cache_key is not None
                    db.put_cache_entry(
                        conn,
                        flight.prepared.cache_key,
                        step.name,
                        finished.stored,
                        result.values,
                        self.run_id,
                    )
                db.update_step(
                    conn,
                    row.id,
                    status=db.SUCCEEDED,
                    outputs=finished.stored,
                    values=values,
                    finished_at=now,
                    message=message,
                )
                db.add_event(conn, self.run_id, "step-succeeded", message or "", task.step)
                if step.kind not in ("register", "deploy"):  # their values are no metrics
                    self._record_tracking(conn, task.step, finished.logged, values, now)
                from modelyard.tracking.records import record_outputs

                record_outputs(conn, self.run_id, task.step, step.kind, finished.stored, now)
                _queue_step_end(conn, self.run_id, row, db.SUCCEEDED, now)
            elif result.cancelled:
                db.update_step(conn, row.id, status=db.CANCELLED, message=error, finished_at=now)
                _queue_step_end(conn, self.run_id, row, db.CANCELLED, now)
            else:
                failures = row.failures + 1
                if failures <= step.retry.max and retryable:
                    delay = step.retry.delay(failures)
                    db.update_step(
                        conn,
                        row.id,
                        status=db.PENDING,
                        failures=failures,
                        not_before=now + delay,
                        message=f"{error}; retrying in {delay:g}s",
                    )
                    db.add_event(conn, self.run_id, "step-retrying", error or "", task.step)
                else:
                    db.update_step(
                        conn,
                        row.id,
                        status=db.FAILED,
                        failures=failures,
                        message=error,
                        finished_at=now,
                    )
                    db.add_event(conn, self.run_id, "step-failed", error or "", task.step)
                    _queue_step_end(conn, self.run_id, row, db.FAILED, now)
        if not self.runtime.settings.keep_workdirs and ok:
            shutil.rmtree(task.workdir, ignore_errors=True)
        kind = "step-succeeded" if ok else "step-cancelled" if result.cancelled else "step-failed"
        retrying = (
            not ok and not result.cancelled and retryable and row.failures + 1 <= step.retry.max
        )
        self._notify("step-retrying" if retrying else kind, task.step, message or error or "")

    def _record_tracking(
        self, conn: Any, step: str, logged: Logged | None, values: dict[str, Any], now: float
    ) -> None:
        """Metrics and parameters of a succeeded step, in its transaction, queued for MLflow."""
        from modelyard.tracking.records import Logged, record_step

        logged = logged or Logged()
        for warning in logged.warnings:
            db.add_event(conn, self.run_id, "tracking-warning", warning, step)
        record_step(conn, self.run_id, step, logged, values, now)

    def _record_version(
        self,
        conn: Any,
        prepared: PreparedRegistration,
        stored: dict[str, dict[str, Any]],
        values: dict[str, Any],
    ) -> tuple[dict[str, Any], str, str | None]:
        """Record the packaged version in the step's completing transaction: (values, message,
        error). The gate is checked again there, against the champion of that moment."""
        from modelyard.pipeline.model import EVIDENCE_OUTPUT, REGISTER_OUTPUT
        from modelyard.registry.service import Candidate, record_version

        from .registration import not_registered, registered

        registration = prepared.registration
        package = stored[REGISTER_OUTPUT]
        info = values.get(REGISTER_OUTPUT) or {}
        flavors = [f for f in info.get("flavors", []) if f != "python_function"]
        candidate = Candidate(
            project=prepared.run.project,
            model=registration.model,
            description=registration.description,
            package_digest=package["digest"],
            package_size=int(package["size"]),
            flavor=(flavors or ["python_function"])[0],
            signature=info.get("signature"),
            metrics=prepared.metrics,
            params=prepared.params,
            lineage=prepared.lineage,
            tags=prepared.tags,
            approval_status=registration.approval_status,
            rules=tuple(prepared.rules),
            alias=registration.alias_on_register,
            actor=prepared.actor,
            run_id=prepared.run.id,
            evidence_digest=stored[EVIDENCE_OUTPUT]["digest"]
            if EVIDENCE_OUTPUT in stored
            else None,
        )
        try:
            with conn.begin_nested():  # a refused registration leaves no partial rows behind
                outcome = record_version(conn, candidate)
        except ModelyardError as exc:
            return {}, "", f"registering failed: {exc}"
        if outcome.version is None:
            message = f"not registered: {outcome.reason}"
            return not_registered(registration, outcome.reason), message, None
        number = outcome.version.version
        message = f"registered {registration.model}/{number} ({registration.approval_status})"
        if registration.alias_on_register:
            message += f", alias {registration.alias_on_register}"
        return registered(registration, number, package["digest"]), message, None

    def _finish_step(self, row: db.StepRow, status: str, message: str, **values: Any) -> None:
        now = time.time()
        with self.runtime.db.begin() as conn:
            db.update_step(
                conn,
                row.id,
                status=status,
                message=message,
                finished_at=now,
                started_at=row.started_at or now,
                **values,
            )
            db.add_event(conn, self.run_id, f"step-{status}", message, row.name)
            cached = bool(values.get("cached"))
            _queue_step_end(conn, self.run_id, row, status, now, cached=cached)
        kind = "step-cached" if values.get("cached") else f"step-{status}"
        self._notify(kind, row.name, message)

    # -- ending ----------------------------------------------------------------------------------

    def _settle(self, run: db.RunRow, steps: dict[str, db.StepRow], waiting: list[str]) -> None:
        with self.runtime.db.begin() as conn:
            steps = db.get_steps(conn, self.run_id)
            failed = [s for s in steps.values() if s.status == db.FAILED]
            if failed:
                status = db.FAILED
                message = f"step '{failed[0].name}' failed: {failed[0].message}"
            elif waiting:
                status = db.WAITING
                message = "waiting for approval of " + ", ".join(waiting)
            else:
                status = db.SUCCEEDED
                skipped = [s.name for s in steps.values() if s.status == db.SKIPPED]
                summary = ("skipped: " + ", ".join(skipped)) if skipped else ""
                summary += _condition_summary(steps, skipped)
                # what the run registered, or why not ("not registered: mse 6.4 > 6.0") first
                parts = [*_registration_summary(steps), *_deploy_summary(steps), summary]
                message = "; ".join(part for part in parts if part)
            done = status in db.RUN_DONE
            finished_at = time.time() if done else None
            db.update_run(
                conn,
                self.run_id,
                status=status,
                message=message,
                finished_at=finished_at,
            )
            if finished_at is not None:
                from modelyard.tracking.records import record_run_end

                record_run_end(conn, self.run_id, status, finished_at)
            db.add_event(conn, self.run_id, f"run-{status}", message)
        self._notify(f"run-{status}", None, message)

    def _cancel_requested(self) -> bool:
        with self.runtime.db.begin() as conn:
            return db.get_run(conn, self.run_id).cancel_requested

    def _cancel(self) -> None:
        for flight in list(self.in_flight.values()):
            if flight.handle is not None:
                flight.handle.cancel()
        while self.in_flight:
            self._complete(self.events.get())
        mark_cancelled(self.runtime, self.run_id)
        self._notify("run-cancelled", None, "cancelled")

    def _recover_lost_attempts(self, conn: Any) -> None:
        """Attempts left running by a dead driver: stop what survives of them, run them again."""
        for name, attempt in db.running_attempts(conn, self.run_id):
            if is_same_process(attempt.pid, attempt.pid_started_at):
                assert attempt.pid is not None
                kill_tree(attempt.pid)
            db.update_attempt(
                conn,
                attempt.id,
                status="lost",
                finished_at=time.time(),
                error="the process driving the run stopped during this attempt",
            )
            row = db.get_step(conn, self.run_id, name)
            db.update_step(conn, row.id, status=db.PENDING, message="re-running a lost attempt")
            db.add_event(conn, self.run_id, "attempt-lost", f"attempt {attempt.number}", name)

    def _notify(self, kind: str, step: str | None, message: str) -> None:
        if self.observer is not None:
            self.observer(kind, step, message)


def mark_cancelled(runtime: Runtime, run_id: int) -> None:
    """Record a run as cancelled: unfinished steps cancelled, orphaned processes killed."""
    now = time.time()
    with runtime.db.begin() as conn:
        for _name, attempt in db.running_attempts(conn, run_id):
            if is_same_process(attempt.pid, attempt.pid_started_at):
                assert attempt.pid is not None
                kill_tree(attempt.pid)
            db.update_attempt(conn, attempt.id, status="cancelled", finished_at=now)
        for row in db.get_steps(conn, run_id).values():
            if row.status not in db.STEP_DONE:
                db.update_step(conn, row.id, status=db.CANCELLED, finished_at=now)
                if row.started_at is not None:  # it ran (or waited): MLflow shows it cancelled
                    _queue_step_end(conn, run_id, row, db.CANCELLED, now)
        db.update_run(conn, run_id, status=db.CANCELLED, finished_at=now, message="cancelled")
        db.add_event(conn, run_id, "run-cancelled", "cancelled")
        from modelyard.tracking.records import record_run_end

        record_run_end(conn, run_id, db.CANCELLED, now)


def _queue_step_end(
    conn: Any,
    run_id: int,
    row: db.StepRow,
    status: str,
    at: float,
    cached: bool = False,
) -> None:
    """Queue a step's end for its nested MLflow run, in the transaction that records the end."""
    from modelyard.tracking.records import record_step_end

    started = row.started_at  # None for a step that never started a process: it ends at once
    record_step_end(conn, run_id, row.name, row.kind, status, started=started, at=at, cached=cached)


def _read_logged(task: StepTask) -> Logged:
    """What the attempt logged; bad lines become warnings, also appended to the step's log."""
    from modelyard.tracking.records import read_metrics_file

    logged = read_metrics_file(task.metrics_file)
    if logged.warnings:
        try:
            with open(task.log_path, "a", encoding="utf-8") as log:
                for warning in logged.warnings:
                    log.write(f"modelyard: warning: {warning}\n")
        except OSError:
            pass  # the events keep the warning
    return logged


def _registration_summary(steps: dict[str, db.StepRow]) -> list[str]:
    """What the run registered (or why not), then the decisions on those versions."""
    done = [
        s
        for s in steps.values()
        if s.status == db.SUCCEEDED
        and s.message
        and (s.kind == "register" or (s.kind == "approval" and "version" in (s.values or {})))
    ]
    if len(done) == 1:
        return [str(done[0].message)]
    return [f"{s.name}: {s.message}" for s in done]


def _deployed_message(values: dict[str, Any]) -> str:
    ref = f"{values.get('model')}/{values.get('version')}"
    where = f"{values.get('endpoint')} ({values.get('url')})"
    if values.get("outcome") == "unchanged":
        return f"{ref} already serves on {where}"
    return f"deployed {ref} to {where}"


def _deploy_summary(steps: dict[str, db.StepRow]) -> list[str]:
    """Where the run deployed versions."""
    return [
        str(s.message)
        for s in steps.values()
        if s.kind == "deploy" and s.status == db.SUCCEEDED and s.message
    ]


def _condition_summary(steps: dict[str, db.StepRow], skipped: list[str]) -> str:
    if not skipped:
        return ""
    reasons = [
        f"{s.name}: {s.message}" for s in steps.values() if s.kind == "condition" and s.message
    ]
    return (" (" + "; ".join(reasons) + ")") if reasons else ""
