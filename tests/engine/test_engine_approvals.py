"""Approvals: a waiting run is only a row in the database until a person decides."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from engine_harness import EngineHarness, wait_until

from modelyard.engine import service
from modelyard.errors import NotFound, StateConflict
from modelyard.store import schema as t

RELEASE = """
pipelines:
  release:
    steps:
      train:
        run: @PY@ mark.py train @SCRATCH@
      approve:
        approval:
          message: Ship the model?
          timeout: 1h
        after: [train]
      deploy:
        run: @PY@ mark.py deploy @SCRATCH@
        after: [approve]
"""

MARK = """
    import sys
    from pathlib import Path
    Path(sys.argv[2], sys.argv[1]).write_text("ran")
"""


@pytest.fixture
def waiting(engine: EngineHarness) -> tuple[EngineHarness, int]:
    """A run of `release` that has trained and now waits for the approval."""
    engine.write(RELEASE, {"mark.py": MARK})
    run = engine.run("release")
    assert run.status == "waiting", run.message
    return engine, run.id


def test_run_waits_for_approval_without_a_driver(waiting: tuple[EngineHarness, int]) -> None:
    engine, run_id = waiting
    run = engine.detail(run_id).run

    assert run.owner is None and run.lease_until is None
    assert run.finished_at is None
    assert run.message == "waiting for approval of approve"
    steps = engine.steps(run_id)
    assert steps["train"].status == "succeeded"
    assert steps["approve"].status == "waiting"
    assert steps["approve"].message == "Ship the model?"
    assert steps["approve"].deadline is not None and steps["approve"].deadline > time.time()
    assert steps["deploy"].status == "pending"
    assert not (engine.scratch / "deploy").exists()


def test_approval_lets_the_run_finish(waiting: tuple[EngineHarness, int]) -> None:
    engine, run_id = waiting
    (engine.scratch / "train").unlink()

    service.decide_approval(
        engine.runtime, run_id, "approve", approve=True, comment="looks good", actor="alice"
    )
    run = service.continue_after_decision(engine.runtime, run_id)

    assert run is not None and run.status == "succeeded", run
    steps = engine.steps(run_id)
    assert steps["approve"].status == "succeeded"
    assert steps["approve"].message == "approved by alice: looks good"
    assert steps["deploy"].status == "succeeded"
    assert (engine.scratch / "deploy").exists()
    assert not (engine.scratch / "train").exists()  # finished steps are not run again
    assert len(engine.attempts(run_id, "train")) == 1
    with engine.runtime.db.begin() as conn:
        (decision,) = conn.execute(sa.select(t.approvals)).all()
    assert (decision.run_id, decision.decision, decision.actor, decision.comment) == (
        run_id,
        "approved",
        "alice",
        "looks good",
    )


def test_rejection_fails_the_run(waiting: tuple[EngineHarness, int]) -> None:
    engine, run_id = waiting

    service.decide_approval(
        engine.runtime, run_id, "approve", approve=False, comment="too risky", actor="bob"
    )
    run = service.continue_after_decision(engine.runtime, run_id)

    assert run is not None and run.status == "failed"
    assert run.message == "step 'approve' failed: rejected by bob: too risky"
    steps = engine.steps(run_id)
    assert steps["approve"].status == "failed"
    assert steps["deploy"].status == "pending"
    assert engine.attempts(run_id, "deploy") == []
    assert not (engine.scratch / "deploy").exists()


def test_refused_decisions_change_nothing(waiting: tuple[EngineHarness, int]) -> None:
    engine, run_id = waiting
    runtime = engine.runtime
    pending_run = engine.create("release")  # its approval step has not been reached yet
    before = engine.snapshot()

    with pytest.raises(StateConflict, match="not waiting for approval"):
        service.decide_approval(runtime, pending_run, "approve", approve=True, actor="alice")
    with pytest.raises(StateConflict, match="is a run step, not an approval"):
        service.decide_approval(runtime, run_id, "train", approve=True, actor="alice")
    with pytest.raises(NotFound, match="run 999999 does not exist"):
        service.decide_approval(runtime, 999999, "approve", approve=True, actor="alice")
    with pytest.raises(NotFound, match="has no step 'nope'"):
        service.decide_approval(runtime, run_id, "nope", approve=True, actor="alice")
    assert engine.snapshot() == before

    service.decide_approval(runtime, run_id, "approve", approve=True, actor="alice")
    decided = engine.snapshot()
    assert len(decided["approvals"]) == 1
    for approve in (True, False):
        with pytest.raises(StateConflict, match="already been decided"):
            service.decide_approval(runtime, run_id, "approve", approve=approve, actor="eve")
    assert engine.snapshot() == decided

    service.continue_after_decision(runtime, run_id)
    finished = engine.snapshot()
    with pytest.raises(StateConflict, match="already been decided"):
        service.decide_approval(runtime, run_id, "approve", approve=False, actor="eve")
    assert engine.snapshot() == finished
    assert engine.steps(run_id)["approve"].message == "approved by alice"


def test_expired_approval_fails_the_run(waiting: tuple[EngineHarness, int]) -> None:
    engine, run_id = waiting
    runtime = engine.runtime

    assert service.expire_approvals(runtime) == []
    assert engine.detail(run_id).run.status == "waiting"

    engine.execute(
        t.step_runs.update()
        .where(t.step_runs.c.run_id == run_id, t.step_runs.c.name == "approve")
        .values(deadline=time.time() - 1)
    )
    before = engine.snapshot()
    with pytest.raises(StateConflict, match="timed out"):
        service.decide_approval(runtime, run_id, "approve", approve=True, actor="late")
    assert engine.snapshot() == before

    assert service.expire_approvals(runtime) == [run_id]

    run = engine.detail(run_id).run
    assert run.status == "failed"
    assert "approval timed out" in run.message
    assert engine.steps(run_id)["approve"].status == "failed"
    assert engine.steps(run_id)["deploy"].status == "pending"
    assert not (engine.scratch / "deploy").exists()
    assert service.expire_approvals(runtime) == []


def test_short_approval_timeout_expires(engine: EngineHarness) -> None:
    engine.write(RELEASE.replace("timeout: 1h", "timeout: 0.2s"), {"mark.py": MARK})
    run_id = engine.create("release")
    service.drive_run(engine.runtime, run_id)

    # the driver may already have seen the deadline pass; if not, the run waits until it does
    expired: list[int] = []

    def settled() -> bool:
        expired.extend(service.expire_approvals(engine.runtime))
        return engine.detail(run_id).run.status != "waiting"

    wait_until(settled, "the approval to time out")
    run = engine.detail(run_id).run
    assert run.status == "failed", run.message
    assert "approval timed out" in run.message
    assert expired in ([], [run_id])
