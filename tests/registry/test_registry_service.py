"""The registry's service functions on SQLite and PostgreSQL: version numbering under concurrency,
approval rules, aliases and references, comparisons. Versions are recorded directly (as the
register step does at its end) with made-up package digests: no packaging is needed here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelyard.engine.runtime import Runtime
from modelyard.errors import ConfigError, NotFound, StateConflict
from modelyard.registry import service
from modelyard.registry.gates import ResolvedRule
from modelyard.registry.service import Candidate, Outcome, record_version
from modelyard.store import registry_schema as rt
from modelyard.testing.projects import open_runtime

PROJECT = "p"
REGISTRY_TABLES = (rt.models, rt.model_versions, rt.model_aliases, rt.model_events)


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    opened = open_runtime(tmp_path / "p", database_url)
    try:
        yield opened
    finally:
        opened.close()


def candidate(
    metrics: dict[str, float] | None = None,
    *,
    model: str = "toy",
    rules: tuple[ResolvedRule, ...] = (),
    run_id: int | None = None,
    **changes: Any,
) -> Candidate:
    values: dict[str, Any] = {
        "project": PROJECT,
        "model": model,
        "description": "",
        "package_digest": "sha256:" + "ab" * 32,
        "package_size": 10,
        "flavor": "python_function",
        "signature": None,
        "metrics": metrics if metrics is not None else {"mse": 5.0},
        "params": {},
        "lineage": {"run_id": run_id},
        "tags": {},
        "approval_status": "pending",
        "rules": rules,
        "alias": None,
        "actor": "test",
        "run_id": run_id,
    }
    return Candidate(**(values | changes))


def register(runtime: Runtime, *args: Any, **kwargs: Any) -> Outcome:
    with runtime.db.begin() as conn:
        return record_version(conn, candidate(*args, **kwargs))


def snapshot(runtime: Runtime) -> dict[str, list[tuple[str, ...]]]:
    """Every row of the registry's tables, to prove that a refused action changed nothing."""
    with runtime.db.begin() as conn:
        return {
            table.name: sorted(tuple(map(repr, row)) for row in conn.execute(sa.select(table)))
            for table in REGISTRY_TABLES
        }


# -- numbering -----------------------------------------------------------------------------------


def test_ten_concurrent_registrations_get_ten_distinct_version_numbers(runtime: Runtime) -> None:
    """Ten threads, each with its own connection, register the same new model at once: the model
    is created once and the versions are numbered 1..10 (row lock / SQLite write transaction)."""
    start = threading.Barrier(10)
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []

    def register_one(index: int) -> None:
        try:
            start.wait()
            outcomes.append(register(runtime, {"mse": float(index)}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register_one, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    numbers = sorted(o.version.version for o in outcomes if o.version is not None)
    assert numbers == list(range(1, 11))
    versions = service.list_versions(runtime, PROJECT, "toy")[1]
    assert sorted(d.version.version for d in versions) == list(range(1, 11))
    # each version kept its own metrics: the numbers were not handed out twice
    assert sorted(d.version.metrics["mse"] for d in versions) == [float(i) for i in range(10)]
    with runtime.db.begin() as conn:
        models = conn.execute(sa.select(sa.func.count()).select_from(rt.models)).scalar_one()
    assert models == 1


def test_versions_are_numbered_per_model(runtime: Runtime) -> None:
    numbers = [register(runtime, model=name).version for name in ("a", "a", "b")]
    assert [v.version if v else None for v in numbers] == [1, 2, 1]


def test_the_gate_is_checked_again_when_the_version_is_recorded(runtime: Runtime) -> None:
    """A champion that moved while the candidate was packaged is the one it must beat."""
    register(runtime, {"mse": 5.0})
    register(runtime, {"mse": 3.0})
    service.set_alias(runtime, PROJECT, "toy", "champion", 2)
    rule = ResolvedRule("mse", better_than="champion", direction="lower")
    before = snapshot(runtime)

    outcome = register(runtime, {"mse": 4.0}, rules=(rule,))

    assert not outcome.registered and outcome.version is None
    assert outcome.reason == "mse 4.0 >= 3.0 of champion (version 2): not better"
    assert snapshot(runtime) == before


# -- approvals -----------------------------------------------------------------------------------


def test_a_pending_version_is_approved_once_and_cannot_be_rejected_after(
    runtime: Runtime,
) -> None:
    register(runtime)

    detail = service.decide(
        runtime, PROJECT, "toy/1", approve=True, comment="looks good", actor="ana"
    )

    version = detail.version
    assert (version.approval_status, version.decided_by) == ("approved", "ana")
    assert version.decision_comment == "looks good" and version.decided_at is not None
    assert [(e.kind, e.actor, e.message) for e in detail.events][-1] == (
        "approved",
        "ana",
        "looks good",
    )
    before = snapshot(runtime)
    with pytest.raises(
        StateConflict,
        match=r"toy/1 is approved by ana: an approved version "
        r"cannot be rejected",
    ) as refused:
        service.decide(runtime, PROJECT, "toy", approve=False, actor="bob")
    assert refused.value.exit_code == 4
    assert "alias set toy ALIAS VERSION" in (refused.value.hint or "")
    with pytest.raises(StateConflict, match=r"toy/1 is already approved by ana"):
        service.decide(runtime, PROJECT, "toy/1", approve=True, actor="bob")
    assert snapshot(runtime) == before


def test_a_rejected_version_cannot_be_approved_or_rejected_again(runtime: Runtime) -> None:
    register(runtime)
    service.decide(runtime, PROJECT, "toy/1", approve=False, comment="overfits", actor="ana")
    before = snapshot(runtime)

    with pytest.raises(
        StateConflict,
        match=r"toy/1 was rejected by ana: a rejected version "
        r"cannot be approved",
    ):
        service.decide(runtime, PROJECT, "toy/1", approve=True)
    with pytest.raises(StateConflict, match=r"toy/1 is already rejected by ana"):
        service.decide(runtime, PROJECT, "toy/1", approve=False)
    assert snapshot(runtime) == before


def test_deciding_unknown_models_versions_and_aliases_is_not_found(runtime: Runtime) -> None:
    register(runtime)
    register(runtime)
    before = snapshot(runtime)

    cases = [
        ("nope", r"model 'nope' does not exist in project 'p'"),
        ("toy/9", r"model 'toy' has no version 9 \(its versions are 1 to 2\)"),
        ("toy@champion", r"model 'toy' has no alias 'champion'"),
    ]
    for ref, message in cases:
        with pytest.raises(NotFound, match=message) as missing:
            service.decide(runtime, PROJECT, ref, approve=True)
        assert missing.value.exit_code == 3
    with pytest.raises(ConfigError, match=r"'toy/x' is not a model reference"):
        service.decide(runtime, PROJECT, "toy/x", approve=True)
    assert snapshot(runtime) == before


# -- aliases and references ----------------------------------------------------------------------


def test_aliases_are_set_moved_resolved_and_unset(runtime: Runtime) -> None:
    for _ in range(3):
        register(runtime)

    detail, before = service.set_alias(runtime, PROJECT, "toy", "champion", 1, actor="ana")
    assert (detail.version.version, detail.aliases, before) == (1, ["champion"], None)
    assert service.show_version(runtime, PROJECT, "toy@champion").version.version == 1

    moved, before = service.set_alias(runtime, PROJECT, "toy", "champion", 2, actor="bob")
    assert (moved.version.version, before) == (2, 1)
    assert service.show_version(runtime, PROJECT, "toy@champion").version.version == 2
    assert service.show_version(runtime, PROJECT, "toy/1").aliases == []
    # NAME and NAME@latest are the newest version
    assert service.show_version(runtime, PROJECT, "toy").version.version == 3
    assert service.show_version(runtime, PROJECT, "toy@latest").version.version == 3
    history = service.show_version(runtime, PROJECT, "toy/2").events
    assert [(e.kind, e.actor, e.message) for e in history][-1] == (
        "alias-set",
        "bob",
        "champion -> 2 (was 1)",
    )

    assert service.unset_alias(runtime, PROJECT, "toy", "champion", actor="ana") == 2
    with pytest.raises(NotFound, match="has no alias 'champion'"):
        service.show_version(runtime, PROJECT, "toy@champion")
    with pytest.raises(NotFound, match="has no alias 'champion'"):
        service.unset_alias(runtime, PROJECT, "toy", "champion")


def test_refused_alias_changes_change_nothing(runtime: Runtime) -> None:
    register(runtime)
    register(runtime)
    service.decide(runtime, PROJECT, "toy/2", approve=False)
    before = snapshot(runtime)

    with pytest.raises(StateConflict, match=r"toy/2 was rejected: an alias cannot point at it"):
        service.set_alias(runtime, PROJECT, "toy", "champion", 2)
    with pytest.raises(NotFound, match=r"model 'toy' has no version 7"):
        service.set_alias(runtime, PROJECT, "toy", "champion", 7)
    with pytest.raises(NotFound, match=r"model 'nope' does not exist"):
        service.set_alias(runtime, PROJECT, "nope", "champion", 1)
    with pytest.raises(ConfigError, match=r"'latest' cannot be an alias"):
        service.set_alias(runtime, PROJECT, "toy", "latest", 1)
    with pytest.raises(ConfigError, match=r"'1st' is not a valid alias name"):
        service.set_alias(runtime, PROJECT, "toy", "1st", 1)
    assert snapshot(runtime) == before


def test_references_are_parsed() -> None:
    assert service.parse_ref("abalone") == service.ModelRef("abalone")
    assert service.parse_ref("abalone/3") == service.ModelRef("abalone", version=3)
    assert service.parse_ref("abalone@champion") == service.ModelRef("abalone", alias="champion")
    assert service.parse_ref("abalone@latest") == service.ModelRef("abalone")
    for text in ("", "abalone/", "abalone/x", "a/1/2", "abalone@", "9lives"):
        with pytest.raises(ConfigError, match="is not a model reference"):
            service.parse_ref(text)


# -- comparisons ---------------------------------------------------------------------------------


def test_compare_shows_deltas_and_which_version_is_better(runtime: Runtime) -> None:
    lower_score = ResolvedRule("score", max=100.0, direction="lower")
    register(runtime, {"mse": 5.0, "accuracy": 0.8, "score": 3.0, "custom": 1.0})
    register(
        runtime, {"mse": 4.0, "accuracy": 0.7, "score": 3.0, "custom": 2.0}, rules=(lower_score,)
    )

    comparison = service.compare_versions(runtime, PROJECT, "toy/1", "toy/2")

    rows = {m.name: m for m in comparison.metrics}
    assert (rows["mse"].delta, rows["mse"].direction, rows["mse"].better) == (-1.0, "lower", "b")
    assert rows["accuracy"].direction == "higher" and rows["accuracy"].better == "a"
    assert rows["accuracy"].delta == pytest.approx(-0.1)
    # a direction declared by a gate rule counts; equal values are equal
    assert (rows["score"].direction, rows["score"].better) == ("lower", "equal")
    # an unknown direction: the delta, but no verdict
    assert (rows["custom"].delta, rows["custom"].direction, rows["custom"].better) == (
        1.0,
        None,
        None,
    )
