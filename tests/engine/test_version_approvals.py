"""Approval steps that decide a model version (`approval: {approves: REGISTER_STEP}`), on SQLite and
PostgreSQL: a decision through the step (`modelyard approve`) and one through the registry
(`modelyard models approve`) are recorded on both sides in one transaction, a refused decision
changes no row, and a version decided before its step opens needs no waiting.

The register step takes a folder shaped like an MLflow model (`FAKE_MODEL_STEP`), so each run
registers in well under a second.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from engine_harness import EngineHarness

from modelyard.engine import service
from modelyard.errors import NotFound, StateConflict
from modelyard.project.loader import Problem, ProjectInvalid, load_project
from modelyard.registry import service as registry
from modelyard.store import registry as rdb
from modelyard.store import registry_schema as rt
from modelyard.store import schema as t
from modelyard.testing import write_project
from modelyard.testing.registry import FAKE_MODEL_STEP

RELEASE = """
name: shop
pipelines:
  release:
    steps:
      make:
        run: @PY@ make_model.py ${{ outputs.model }}
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.make.outputs.model }}
          metrics: {mse: 1.0}
          approval_status: @STATUS@
      approve:
        approval:
          message: Ship toy?
          approves: register              # no `after:`: approving a version waits for it
          alias_on_approval: @ALIAS@
          timeout: 1h
      deploy:
        run: @PY@ mark.py deploy @SCRATCH@
        after: [approve]
"""

MARK = """
    import sys
    from pathlib import Path
    Path(sys.argv[2], sys.argv[1]).write_text("ran")
"""

PROJECT = "shop"


def write(engine: EngineHarness, status: str = "pending", alias: str = "champion") -> None:
    text = RELEASE.replace("@STATUS@", status).replace("@ALIAS@", alias)
    engine.write(text, {"make_model.py": FAKE_MODEL_STEP, "mark.py": MARK})


def version(engine: EngineHarness, ref: str = "toy/1") -> registry.VersionDetail:
    return registry.show_version(engine.runtime, PROJECT, ref)


def aliases(engine: EngineHarness) -> dict[str, int]:
    with engine.runtime.db.begin() as conn:
        model = rdb.get_model(conn, PROJECT, "toy")
        assert model is not None
        return rdb.aliases_of_model(conn, model.id)


def approvals(engine: EngineHarness) -> list[tuple[Any, ...]]:
    with engine.runtime.db.begin() as conn:
        rows = conn.execute(sa.select(t.approvals).order_by(t.approvals.c.id)).all()
    return [(r.run_id, r.decision, r.actor, r.comment) for r in rows]


def snapshot(engine: EngineHarness) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the run tables and of the registry's, to prove a refusal changed nothing."""
    tables = (rt.models, rt.model_versions, rt.model_aliases, rt.model_events)
    state = engine.snapshot()
    with engine.runtime.db.begin() as conn:
        for table in tables:
            rows = conn.execute(sa.select(table)).all()
            state[table.name] = sorted(tuple(map(repr, row)) for row in rows)
    return state


@pytest.fixture
def waiting(engine: EngineHarness) -> tuple[EngineHarness, int]:
    """A run of `release` that registered toy/1 (pending) and waits for a person's decision."""
    write(engine)
    run = engine.run("release")
    assert run.status == "waiting", run.message
    return engine, run.id


# -- opening the step ----------------------------------------------------------------------------


def test_the_step_waits_on_the_version_its_register_step_made(
    waiting: tuple[EngineHarness, int],
) -> None:
    engine, run_id = waiting

    steps = engine.steps(run_id)
    assert steps["register"].status == "succeeded"
    approve = steps["approve"]
    assert approve.status == "waiting"
    assert approve.values == {"model": "toy", "version": 1}
    assert approve.message == "Ship toy? (toy/1)"
    assert approve.deadline is not None
    assert steps["deploy"].status == "pending"
    assert version(engine).version.approval_status == "pending"
    assert ("approval-waiting", "approve", "Ship toy? (toy/1)") in engine.events(run_id)
    assert approvals(engine) == []


# -- deciding through the step (`modelyard approve RUN STEP`) -----------------------------------


def test_approving_the_step_approves_the_version_and_points_the_alias_at_it(
    waiting: tuple[EngineHarness, int],
) -> None:
    engine, run_id = waiting

    service.decide_approval(
        engine.runtime, run_id, "approve", approve=True, comment="looks good", actor="alice"
    )

    # the version is decided in the same transaction as the step's approval ...
    detail = version(engine)
    assert detail.version.approval_status == "approved"
    assert (detail.version.decided_by, detail.version.decision_comment) == ("alice", "looks good")
    assert approvals(engine) == [(run_id, "approved", "alice", "looks good")]
    assert engine.steps(run_id)["approve"].status == "waiting"  # ... the run goes on when driven
    assert aliases(engine) == {}

    run = service.continue_after_decision(engine.runtime, run_id)

    assert run is not None and run.status == "succeeded", run
    assert run.message == (
        "register: registered toy/1 (pending); approve: approved by alice: looks good; "
        "toy@champion -> 1"
    )
    steps = engine.steps(run_id)
    assert steps["approve"].status == "succeeded"
    assert steps["approve"].message == "approved by alice: looks good; toy@champion -> 1"
    assert steps["deploy"].status == "succeeded"
    assert (engine.scratch / "deploy").exists()
    assert aliases(engine) == {"champion": 1}
    detail = version(engine, "toy@champion")
    assert [(e.kind, e.actor) for e in detail.events] == [
        ("registered", f"run {run_id}"),
        ("approved", "alice"),
        ("alias-set", "alice"),
    ]


def test_rejecting_the_step_rejects_the_version_and_fails_the_run(
    waiting: tuple[EngineHarness, int],
) -> None:
    engine, run_id = waiting

    service.decide_approval(
        engine.runtime, run_id, "approve", approve=False, comment="too risky", actor="bob"
    )
    run = service.continue_after_decision(engine.runtime, run_id)

    assert run is not None and run.status == "failed"
    assert run.message == "step 'approve' failed: rejected by bob: too risky"
    detail = version(engine)
    assert detail.version.approval_status == "rejected"
    assert (detail.version.decided_by, detail.version.decision_comment) == ("bob", "too risky")
    assert aliases(engine) == {}
    steps = engine.steps(run_id)
    assert steps["deploy"].status == "pending"
    assert not (engine.scratch / "deploy").exists()


# -- deciding through the registry (`modelyard models approve MODEL/VERSION`) -------------------


def test_approving_the_version_in_the_registry_decides_the_waiting_step(
    waiting: tuple[EngineHarness, int],
) -> None:
    engine, run_id = waiting

    detail = registry.decide(
        engine.runtime, PROJECT, "toy/1", approve=True, comment="ok", actor="bob"
    )

    assert detail.version.approval_status == "approved"
    assert approvals(engine) == [(run_id, "approved", "bob", "ok")]
    assert ("approval-recorded", "approve", "bob (toy/1): ok") in engine.events(run_id)
    # a second decision through the step is refused: the two sides never disagree
    with pytest.raises(StateConflict, match="has already been decided"):
        service.decide_approval(engine.runtime, run_id, "approve", approve=False, actor="eve")

    run = service.continue_after_decision(engine.runtime, run_id)

    assert run is not None and run.status == "succeeded", run
    steps = engine.steps(run_id)
    assert steps["approve"].status == "succeeded"
    assert steps["approve"].message == "approved by bob: ok; toy@champion -> 1"
    assert steps["deploy"].status == "succeeded"
    assert aliases(engine) == {"champion": 1}
    assert version(engine).version.decided_by == "bob"


def test_rejecting_the_version_in_the_registry_fails_the_waiting_run(
    waiting: tuple[EngineHarness, int],
) -> None:
    engine, run_id = waiting

    registry.decide(engine.runtime, PROJECT, "toy/1", approve=False, comment="no", actor="bob")
    run = service.continue_after_decision(engine.runtime, run_id)

    assert run is not None and run.status == "failed"
    assert run.message == "step 'approve' failed: rejected by bob: no"
    assert approvals(engine) == [(run_id, "rejected", "bob", "no")]
    assert engine.steps(run_id)["deploy"].status == "pending"
    assert aliases(engine) == {}


def test_a_registry_decision_touches_only_the_runs_waiting_on_that_version(
    engine: EngineHarness,
) -> None:
    write(engine)
    first = engine.run("release").id
    second = engine.run("release").id  # registered toy/2, waits on it

    registry.decide(engine.runtime, PROJECT, "toy/2", approve=True, actor="bob")

    assert approvals(engine) == [(second, "approved", "bob", "")]
    assert engine.steps(first)["approve"].status == "waiting"
    assert version(engine, "toy/1").version.approval_status == "pending"
    run = service.continue_after_decision(engine.runtime, second)
    assert run is not None and run.status == "succeeded"
    assert aliases(engine) == {"champion": 2}


# -- refused decisions change nothing ------------------------------------------------------------


def test_refused_decisions_change_no_row(waiting: tuple[EngineHarness, int]) -> None:
    engine, run_id = waiting
    runtime = engine.runtime
    not_started = engine.create("release")  # its approval step has not opened
    before = snapshot(engine)

    with pytest.raises(StateConflict, match="is not waiting for approval \\(it is pending\\)"):
        service.decide_approval(runtime, not_started, "approve", approve=True, actor="alice")
    with pytest.raises(NotFound, match="run 999999 does not exist"):
        service.decide_approval(runtime, 999999, "approve", approve=True, actor="alice")
    with pytest.raises(NotFound, match="model 'toy' has no version 7"):
        registry.decide(runtime, PROJECT, "toy/7", approve=True, actor="alice")
    assert snapshot(engine) == before

    service.decide_approval(runtime, run_id, "approve", approve=True, comment="yes", actor="alice")
    decided = snapshot(engine)

    for approve in (True, False):
        with pytest.raises(StateConflict, match="has already been decided"):
            service.decide_approval(runtime, run_id, "approve", approve=approve, actor="eve")
    with pytest.raises(StateConflict, match="toy/1 is already approved by alice"):
        registry.decide(runtime, PROJECT, "toy/1", approve=True, actor="eve")
    with pytest.raises(StateConflict, match="an approved version cannot be rejected"):
        registry.decide(runtime, PROJECT, "toy/1", approve=False, actor="eve")
    assert snapshot(engine) == decided

    service.continue_after_decision(runtime, run_id)
    finished = snapshot(engine)
    with pytest.raises(StateConflict, match="has already been decided \\(succeeded\\)"):
        service.decide_approval(runtime, run_id, "approve", approve=False, actor="eve")
    assert snapshot(engine) == finished


def test_the_step_cannot_overturn_a_version_rejected_in_the_registry(
    waiting: tuple[EngineHarness, int],
) -> None:
    engine, run_id = waiting
    registry.decide(engine.runtime, PROJECT, "toy/1", approve=False, comment="no", actor="bob")
    before = snapshot(engine)

    with pytest.raises(StateConflict, match="has already been decided"):
        service.decide_approval(engine.runtime, run_id, "approve", approve=True, actor="alice")

    assert snapshot(engine) == before
    assert version(engine).version.approval_status == "rejected"


def test_a_step_decision_on_a_version_decided_meanwhile_is_refused_whole(
    waiting: tuple[EngineHarness, int],
) -> None:
    """The version was decided without the step hearing of it (as in a race between the two
    commands): the step's approval, inserted first, is rolled back with the refusal."""
    engine, run_id = waiting
    with engine.runtime.db.begin() as conn:
        model = rdb.get_model(conn, PROJECT, "toy")
        assert model is not None
        row = rdb.get_version(conn, model.id, 1)
        assert row is not None
        assert rdb.decide_version(conn, row.id, "approved", "mallory", "sneaky")
    before = snapshot(engine)

    with pytest.raises(StateConflict) as info:
        service.decide_approval(engine.runtime, run_id, "approve", approve=False, actor="alice")

    assert info.value.message.startswith(
        "step 'approve' approves toy/1, which cannot be decided: toy/1 is approved by mallory"
    )
    assert snapshot(engine) == before
    assert approvals(engine) == []


# -- versions decided before the step opens ------------------------------------------------------


def test_a_version_approved_at_registration_finishes_its_step_at_once(
    engine: EngineHarness,
) -> None:
    write(engine, status="approved")

    run = engine.run("release")

    assert run.status == "succeeded", run.message
    steps = engine.steps(run.id)
    approve = steps["approve"]
    assert approve.status == "succeeded"
    assert approve.message == (
        f"toy/1 was already approved by run {run.id}: approved at registration "
        "(approval_status: approved); toy@champion -> 1"
    )
    assert approve.values == {"model": "toy", "version": 1}
    assert steps["deploy"].status == "succeeded"
    assert aliases(engine) == {"champion": 1}
    assert approvals(engine) == []
    kinds = [kind for kind, step, _ in engine.events(run.id) if step == "approve"]
    assert "approval-waiting" not in kinds


FIRST_LOOK = """
      first_look:
        approval: {message: Have a look first}
"""


@pytest.mark.parametrize("approve", [True, False])
def test_a_version_decided_while_an_earlier_approval_waits_needs_no_second_decision(
    engine: EngineHarness, approve: bool
) -> None:
    write(engine)
    text = (engine.root / "modelyard.yaml").read_text()
    text = text.replace(
        "          timeout: 1h\n", "          timeout: 1h\n        after: [first_look]\n"
    )
    (engine.root / "modelyard.yaml").write_text(text + FIRST_LOOK)
    run_id = engine.run("release").id
    assert engine.steps(run_id)["first_look"].status == "waiting"
    assert engine.steps(run_id)["approve"].status == "pending"

    registry.decide(engine.runtime, PROJECT, "toy/1", approve=approve, comment="seen", actor="bob")
    assert approvals(engine) == []  # first_look decides no version: it was not touched
    service.decide_approval(engine.runtime, run_id, "first_look", approve=True, actor="alice")
    run = service.continue_after_decision(engine.runtime, run_id)

    assert run is not None
    step = engine.steps(run_id)["approve"]
    if approve:
        assert run.status == "succeeded", run.message
        assert step.status == "succeeded"
        assert step.message == "toy/1 was already approved by bob: seen; toy@champion -> 1"
        assert aliases(engine) == {"champion": 1}
    else:
        assert run.status == "failed"
        assert step.status == "failed"
        assert step.message == "toy/1 was already rejected by bob: seen"
        assert run.message == "step 'approve' failed: toy/1 was already rejected by bob: seen"
        assert aliases(engine) == {}
    assert [a[2] for a in approvals(engine)] == ["alice"]  # only first_look's decision


# -- timeouts and aliases ------------------------------------------------------------------------


def test_an_expired_approval_fails_the_run_and_leaves_the_version_pending(
    waiting: tuple[EngineHarness, int],
) -> None:
    engine, run_id = waiting
    engine.execute(
        t.step_runs.update()
        .where(t.step_runs.c.run_id == run_id, t.step_runs.c.name == "approve")
        .values(deadline=time.time() - 1)
    )

    assert service.expire_approvals(engine.runtime) == [run_id]

    assert engine.detail(run_id).run.status == "failed"
    assert version(engine).version.approval_status == "pending"
    assert aliases(engine) == {}
    # the version can still be decided in the registry; the finished step is left alone
    registry.decide(engine.runtime, PROJECT, "toy/1", approve=True, actor="bob")
    assert approvals(engine) == []


def test_a_reserved_alias_on_approval_is_refused_before_any_run(engine: EngineHarness) -> None:
    write(engine, alias="latest")  # NAME@latest means the newest version: not an alias
    [problem] = problems(engine.root)
    assert "'latest' cannot be an alias" in problem.message
    lines = (engine.root / "modelyard.yaml").read_text().splitlines()
    assert "alias_on_approval" in lines[located(problem, engine.root) - 1]


# -- lint and schema -----------------------------------------------------------------------------


def problems(root: Path) -> list[Problem]:
    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    return info.value.problems


def located(problem: Problem, root: Path) -> int:
    file, _, line = problem.where.rpartition(":")
    assert file == str(root / "modelyard.yaml")
    return int(line)


LINTED = """\
pipelines:
  release:
    steps:
      make:
        run: echo ${{ outputs.model }}
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.make.outputs.model }}
      approve:
        approval:
          message: Ship it?
          approves: @TARGET@
"""


def test_approves_must_name_a_step(tmp_path: Path) -> None:
    root = write_project(tmp_path, LINTED.replace("@TARGET@", "regster"))

    (problem,) = problems(root)

    assert (problem.level, problem.message) == ("error", "unknown step 'regster'")
    assert located(problem, root) == 14


def test_approves_must_name_a_register_step(tmp_path: Path) -> None:
    root = write_project(tmp_path, LINTED.replace("@TARGET@", "make"))

    (problem,) = problems(root)

    assert problem.level == "error"
    assert problem.message == (
        "'make' is a run step: an approval approves the version of a register step"
    )
    assert problem.hint == "name a register step: register"
    assert located(problem, root) == 14


def test_alias_on_approval_needs_approves(tmp_path: Path) -> None:
    text = LINTED.replace(
        "          approves: @TARGET@\n", "          alias_on_approval: champion\n"
    )
    root = write_project(tmp_path, text)

    (problem,) = problems(root)

    assert problem.level == "error"
    assert "alias_on_approval needs approves: (the register step)" in problem.message
    assert "pipelines.release.steps.approve.approval" in problem.message
    assert located(problem, root) == 12


def test_approves_makes_the_approval_depend_on_the_register_step(tmp_path: Path) -> None:
    from modelyard.pipeline.dag import Dag

    root = write_project(tmp_path, LINTED.replace("@TARGET@", "register"))

    pipeline = load_project(root).pipelines["release"]

    assert pipeline.steps["approve"].approves == "register"
    assert pipeline.steps["approve"].after == ()
    assert Dag(pipeline).dependencies["approve"] == frozenset({"register"})
