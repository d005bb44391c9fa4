"""Service functions of the model registry: what the CLI (and later the HTTP API) call.

Models are names within a project; a version is an immutable MLflow package (a dir artifact)
with metrics, params, lineage, the gate's results, a model card and an approval status that a
person decides once. Aliases (`champion`) point at versions. References: `NAME` (the newest
version), `NAME/3`, `NAME@champion`.

Registration itself happens in a pipeline's register step: `record_version` runs inside the
driver's transaction that completes the step, so a version exists exactly when its step
succeeded. Nothing here imports MLflow.
"""

from __future__ import annotations

import getpass
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modelyard.errors import ArtifactError, ConfigError, NotFound, StateConflict
from modelyard.registry.cards import render_card
from modelyard.registry.gates import (
    HIGHER,
    LOWER,
    Champion,
    GateReport,
    ResolvedRule,
    evaluate_gate,
    known_direction,
)
from modelyard.store import registry as rdb
from modelyard.store.registry import APPROVED, PENDING, REJECTED, ModelRow, VersionRow

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime
    from modelyard.store.registry import ModelEventRow

LATEST = "latest"  # NAME@latest: the newest version (never a stored alias)
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_REF = re.compile(rf"^(?P<name>{_NAME})(?:/(?P<version>\d+)|@(?P<alias>{_NAME}))?$")
_ALIAS = re.compile(rf"^{_NAME}$")


# -- references ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def parse_ref(text: str) -> ModelRef:
    """`abalone`, `abalone/3` or `abalone@champion`."""
    match = _REF.match(text.strip())
    if match is None:
        raise ConfigError(
            f"'{text}' is not a model reference",
            hint="write NAME (the newest version), NAME/VERSION (e.g. abalone/3) or NAME@ALIAS "
            "(e.g. abalone@champion)",
        )
    version = match.group("version")
    alias = match.group("alias")
    return ModelRef(
        match.group("name"),
        int(version) if version is not None else None,
        None if alias == LATEST else alias,
    )


def check_alias_name(alias: str) -> None:
    if not _ALIAS.match(alias):
        raise ConfigError(
            f"'{alias}' is not a valid alias name",
            hint="use letters, digits, '_' and '-', starting with a letter or '_'",
        )
    if alias == LATEST:
        raise ConfigError(
            f"'{LATEST}' cannot be an alias: NAME@{LATEST} always means the newest version",
            hint="choose another name, such as champion or candidate",
        )


# -- registration (inside the register step's transaction) ---------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A packaged model waiting to become a version: everything but its number."""

    project: str
    model: str
    description: str
    package_digest: str
    package_size: int
    flavor: str
    signature: dict[str, Any] | None
    metrics: dict[str, float]
    params: dict[str, Any]
    lineage: dict[str, Any]
    tags: dict[str, str]
    approval_status: str
    rules: tuple[ResolvedRule, ...]
    alias: str | None
    actor: str
    run_id: int | None
    evidence_digest: str | None = None  # the report folder a reviewer will see


@dataclass(frozen=True)
class Outcome:
    registered: bool
    gate: GateReport
    version: VersionRow | None = None

    @property
    def reason(self) -> str:
        return self.gate.reason


def check_gate(
    conn: sa.Connection,
    project: str,
    model: str,
    rules: Iterable[ResolvedRule],
    metrics: Mapping[str, float],
) -> GateReport:
    """The gate's verdict now (read only), so a failing gate costs no packaging."""
    rules = list(rules)
    found = rdb.get_model(conn, project, model)
    return evaluate_gate(rules, metrics, _champions(conn, found, rules))


def record_version(conn: sa.Connection, candidate: Candidate) -> Outcome:
    """Check the gate again and insert the version, numbered under the model's row lock.

    The lock (SQLite: the write transaction) serialises registrations of one model, so ten at
    once get ten consecutive numbers, and a `better_than` rule sees the champion of this moment,
    not the one of when the step started.
    """
    model = rdb.lock_or_create_model(
        conn, candidate.project, candidate.model, candidate.description
    )
    if candidate.description and not model.description:
        rdb.update_model(conn, model.id, description=candidate.description)
    report = evaluate_gate(
        candidate.rules, candidate.metrics, _champions(conn, model, candidate.rules)
    )
    if not report.passed:
        return Outcome(False, report)
    number = rdb.next_version_number(conn, model.id)
    now = time.time()
    lineage = dict(candidate.lineage)
    lineage["parents"] = [
        {"model": model.name, "version": version, "alias": alias}
        for alias, version in sorted(report.compared_with.items())
    ]
    gate = report.to_json()
    approved = candidate.approval_status == APPROVED
    card = render_card(
        model=model.name,
        version=number,
        description=model.description or candidate.description,
        created_at=now,
        approval_status=candidate.approval_status,
        package_digest=candidate.package_digest,
        flavor=candidate.flavor,
        signature=candidate.signature,
        metrics=candidate.metrics,
        params=candidate.params,
        gate=gate,
        lineage=lineage,
        tags=candidate.tags,
    )
    version = rdb.insert_version(
        conn,
        model_id=model.id,
        version=number,
        package_digest=candidate.package_digest,
        package_size=candidate.package_size,
        flavor=candidate.flavor,
        signature=candidate.signature,
        metrics=candidate.metrics,
        params=candidate.params,
        lineage=lineage,
        gate=gate,
        run_id=candidate.run_id,
        approval_status=candidate.approval_status,
        decided_by=candidate.actor if approved else None,
        decided_at=now if approved else None,
        decision_comment="approved at registration (approval_status: approved)"
        if approved
        else None,
        tags=candidate.tags,
        card=card,
        created_at=now,
        evidence_digest=candidate.evidence_digest,
    )
    message = f"registered from run {candidate.run_id}" if candidate.run_id else "registered"
    rdb.add_event(conn, model.id, "registered", candidate.actor, message, number)
    if approved:
        rdb.add_event(
            conn, model.id, "approved", candidate.actor, "approved at registration", number
        )
    if candidate.alias is not None:
        previous = rdb.version_of_alias(conn, model.id, candidate.alias)
        moved = f"{candidate.alias} -> {number}"
        if previous is not None:
            moved += f" (was {previous.version})"
        rdb.set_alias(conn, model.id, candidate.alias, version.id, candidate.actor)
        rdb.add_event(conn, model.id, "alias-set", candidate.actor, moved, number)
    return Outcome(True, report, version)


def _champions(
    conn: sa.Connection, model: ModelRow | None, rules: Iterable[ResolvedRule]
) -> dict[str, Champion | None]:
    champions: dict[str, Champion | None] = {}
    for rule in rules:
        alias = rule.better_than
        if alias is None or alias in champions:
            continue
        version = None
        if model is not None:
            version = (
                rdb.latest_version(conn, model.id)
                if alias == LATEST
                else rdb.version_of_alias(conn, model.id, alias)
            )
        champions[alias] = (
            Champion(alias, version.version, version.metrics) if version is not None else None
        )
    return champions


# -- reading -------------------------------------------------------------------------------------


@dataclass
class ModelSummary:
    model: ModelRow
    version_count: int
    latest: VersionRow | None
    aliases: dict[str, int]  # alias -> version number


@dataclass
class VersionDetail:
    model: ModelRow
    version: VersionRow
    aliases: list[str]  # the aliases pointing at this version
    events: list[ModelEventRow] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.model.name}/{self.version.version}"


def list_models(runtime: Runtime, project: str) -> list[ModelSummary]:
    with runtime.db.begin() as conn:
        models = rdb.list_models(conn, project)
        ids = [m.id for m in models]
        counts = rdb.version_counts(conn, ids)
        aliases = rdb.aliases_of_models(conn, ids)
        summaries = []
        for model in models:
            count, _top = counts.get(model.id, (0, 0))
            summaries.append(
                ModelSummary(
                    model, count, rdb.latest_version(conn, model.id), aliases.get(model.id, {})
                )
            )
    return summaries


def list_versions(
    runtime: Runtime, project: str, name: str
) -> tuple[ModelRow, list[VersionDetail]]:
    """The model and its versions, newest first."""
    with runtime.db.begin() as conn:
        model = _model(conn, project, name)
        aliases = rdb.aliases_of_model(conn, model.id)
        versions = rdb.list_versions(conn, model.id)
    return model, [VersionDetail(model, v, _pointing_at(aliases, v.version)) for v in versions]


def show_version(runtime: Runtime, project: str, ref: str) -> VersionDetail:
    with runtime.db.begin() as conn:
        return _detail(conn, project, parse_ref(ref), with_events=True)


def model_card(runtime: Runtime, project: str, ref: str) -> VersionDetail:
    return show_version(runtime, project, ref)


@dataclass(frozen=True)
class MetricComparison:
    name: str
    a: Any
    b: Any
    delta: float | None  # b - a, when both are numbers
    direction: str | None  # lower or higher is better; None: unknown
    better: str | None  # "a", "b", "equal", or None (unknown direction or not comparable)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Comparison:
    a: VersionDetail
    b: VersionDetail
    metrics: list[MetricComparison]


def compare_versions(runtime: Runtime, project: str, a: str, b: str) -> Comparison:
    """The two versions' metrics side by side: b's delta to a, and which is better."""
    with runtime.db.begin() as conn:
        first = _detail(conn, project, parse_ref(a))
        second = _detail(conn, project, parse_ref(b))
    directions = _directions(first.version) | _directions(second.version)
    names = list(dict.fromkeys([*first.version.metrics, *second.version.metrics]))
    rows = []
    for name in names:
        x, y = first.version.metrics.get(name), second.version.metrics.get(name)
        direction = directions.get(name) or known_direction(name)
        delta, better = None, None
        if isinstance(x, int | float) and isinstance(y, int | float):
            delta = float(y) - float(x)
            if direction is None or isinstance(x, bool) or isinstance(y, bool):
                better = None
            elif x == y:
                better = "equal"
            else:
                better = "b" if (y < x) == (direction == LOWER) else "a"
        rows.append(MetricComparison(name, x, y, delta, direction, better))
    return Comparison(first, second, rows)


def _directions(version: VersionRow) -> dict[str, str]:
    """The directions the version's gate rules declared (what its project says is better)."""
    found = {}
    for result in version.gate or []:
        rule = result.get("rule") or {}
        if rule.get("direction") in (LOWER, HIGHER) and rule.get("metric"):
            found[str(rule["metric"])] = str(rule["direction"])
    return found


# -- decisions and aliases -----------------------------------------------------------------------


def decide(
    runtime: Runtime,
    project: str,
    ref: str,
    *,
    approve: bool,
    comment: str = "",
    actor: str | None = None,
) -> VersionDetail:
    """Approve or reject a pending version, once; a refused decision changes nothing."""
    with runtime.db.begin() as conn:
        return decide_in(conn, project, ref, approve=approve, comment=comment, actor=actor)


def decide_in(
    conn: sa.Connection,
    project: str,
    ref: str,
    *,
    approve: bool,
    comment: str = "",
    actor: str | None = None,
) -> VersionDetail:
    """`decide` within the caller's transaction. An approval step of the version's run that
    waits on this version (`approves:`) is decided with it, so the two never disagree."""
    actor = actor or current_user()
    detail = _detail(conn, project, parse_ref(ref))
    version = detail.version
    label = detail.ref
    if version.approval_status != PENDING:
        raise _decided_already(label, version, approve, detail.model.name)
    new = APPROVED if approve else REJECTED
    if not rdb.decide_version(conn, version.id, new, actor, comment):
        raise StateConflict(
            f"{label} was just decided by someone else",
            hint=f"see the decision with `modelyard models show {label}`",
        )
    verb = "approved" if approve else "rejected"
    rdb.add_event(conn, detail.model.id, verb, actor, comment, version.version)
    if version.run_id is not None:
        _decide_waiting_steps(
            conn, version.run_id, f"{detail.model.name}/{version.version}", new, actor, comment
        )
    return _detail(conn, project, ModelRef(detail.model.name, version.version), True)


def _decide_waiting_steps(
    conn: sa.Connection, run_id: int, label: str, decision: str, actor: str, comment: str
) -> None:
    """Record the decision on the run's approval steps still waiting for this version."""
    from modelyard.store import runs as db

    for row in db.get_steps(conn, run_id).values():
        values = row.values or {}
        waiting = row.kind == "approval" and row.status == db.WAITING
        if not waiting or f"{values.get('model')}/{values.get('version')}" != label:
            continue
        if db.get_approval(conn, row.id) is not None:
            continue  # decided already (the version's decision then fails on its WHERE)
        try:
            db.insert_approval(
                conn,
                step_run_id=row.id,
                run_id=run_id,
                decision=decision,
                actor=actor,
                comment=comment,
            )
        except sa.exc.IntegrityError:
            raise StateConflict(
                f"step '{row.name}' of run {run_id}, which approves {label}, was just decided "
                "by someone else",
                hint=f"see it with `modelyard show {run_id}`",
            ) from None
        db.add_event(conn, run_id, "approval-recorded", f"{actor} ({label}): {comment}", row.name)


def _decided_already(label: str, version: VersionRow, approve: bool, name: str) -> StateConflict:
    by = f" by {version.decided_by}" if version.decided_by else ""
    if version.approval_status == APPROVED and not approve:
        return StateConflict(
            f"{label} is approved{by}: an approved version cannot be rejected",
            hint=f"to stop using it, point its aliases at another version (`modelyard models "
            f"alias set {name} ALIAS VERSION`) or unset them, and register a better version",
        )
    if version.approval_status == REJECTED and approve:
        return StateConflict(
            f"{label} was rejected{by}: a rejected version cannot be approved",
            hint="a decision is final: register a new version (run the pipeline again)",
        )
    return StateConflict(
        f"{label} is already {version.approval_status}{by}",
        hint="a version is decided once; nothing was changed",
    )


def set_alias(
    runtime: Runtime,
    project: str,
    name: str,
    alias: str,
    version: int,
    actor: str | None = None,
) -> tuple[VersionDetail, int | None]:
    """Point `alias` at `version`; returns the version and the one the alias pointed at before."""
    with runtime.db.begin() as conn:
        return set_alias_in(conn, project, name, alias, version, actor)


def set_alias_in(
    conn: sa.Connection,
    project: str,
    name: str,
    alias: str,
    version: int,
    actor: str | None = None,
) -> tuple[VersionDetail, int | None]:
    """`set_alias` within the caller's transaction."""
    check_alias_name(alias)
    actor = actor or current_user()
    model = _model(conn, project, name, lock=True)
    target = _version(conn, model, version)
    if target.approval_status == REJECTED:
        raise StateConflict(
            f"{name}/{version} was rejected: an alias cannot point at it",
            hint="point the alias at an approved or pending version",
        )
    previous = rdb.version_of_alias(conn, model.id, alias)
    before = previous.version if previous is not None else None
    if before != version:
        rdb.set_alias(conn, model.id, alias, target.id, actor)
        moved = f"{alias} -> {version}" + (f" (was {before})" if before else "")
        rdb.add_event(conn, model.id, "alias-set", actor, moved, version)
    return _detail(conn, project, ModelRef(name, version)), before


def unset_alias(
    runtime: Runtime, project: str, name: str, alias: str, actor: str | None = None
) -> int:
    """Remove `alias`; returns the version it pointed at."""
    actor = actor or current_user()
    with runtime.db.begin() as conn:
        model = _model(conn, project, name, lock=True)
        previous = rdb.version_of_alias(conn, model.id, alias)
        if previous is None:
            raise _no_alias(conn, model, alias)
        rdb.delete_alias(conn, model.id, alias)
        rdb.add_event(conn, model.id, "alias-unset", actor, alias, previous.version)
        return previous.version


def download(runtime: Runtime, project: str, ref: str, dest: Path) -> VersionDetail:
    """Write the version's package to `dest` (a new or empty folder): an MLflow model that
    `mlflow.pyfunc.load_model(dest)` loads. Every file is checked against its digest."""
    from modelyard.store.artifacts import ArtifactRef

    detail = show_version(runtime, project, ref)
    _new_folder(dest, "a model package")
    package = ArtifactRef(detail.version.package_digest, "dir", detail.version.package_size)
    runtime.store.materialize(package, dest)
    return detail


def write_evidence(
    runtime: Runtime, project: str, ref: str, dest: Path, *, replace: bool = False
) -> VersionDetail:
    """Write the approval evidence a reviewer saw for the version (report.html, summary.md, the
    plots, evidence.json) to `dest`: a new or empty folder, or any folder with `replace`."""
    from modelyard.store import runs as db

    detail = show_version(runtime, project, ref)
    digest = detail.version.evidence_digest
    if digest is None:
        raise NotFound(
            f"{detail.ref} has no approval evidence",
            hint="give its register step `evidence: {data: EVALUATION_ROWS, label: COLUMN}`; "
            "versions registered without it show their metrics with `modelyard models show`",
        )
    with runtime.db.begin() as conn:
        folder = db.get_artifact(conn, digest)
    if folder is None:
        raise ArtifactError(
            f"the evidence of {detail.ref} ({digest}) is not in the artifact store's index",
            hint="the metadata database and the artifact store may not belong together",
        )
    if not replace:
        _new_folder(dest, "approval evidence")
    runtime.store.materialize(folder, dest, overwrite=replace)
    return detail


def _new_folder(dest: Path, what: str) -> None:
    if dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir()):
        dest.rmdir()  # an empty folder is fine: what is written takes its place
    elif dest.exists() or dest.is_symlink():
        raise ArtifactError(
            f"cannot write {what} here: the path exists",
            where=str(dest),
            hint="give a new folder (or an empty one)",
        )


# -- helpers -------------------------------------------------------------------------------------


def _model(conn: sa.Connection, project: str, name: str, *, lock: bool = False) -> ModelRow:
    model = rdb.get_model(conn, project, name, lock=lock)
    if model is None:
        known = ", ".join(m.name for m in rdb.list_models(conn, project))
        raise NotFound(
            f"model '{name}' does not exist in project '{project}'",
            hint=f"the models are: {known}"
            if known
            else "register one with a pipeline's register step (see `modelyard models list`)",
        )
    return model


def _version(conn: sa.Connection, model: ModelRow, number: int) -> VersionRow:
    version = rdb.get_version(conn, model.id, number)
    if version is None:
        latest = rdb.latest_version(conn, model.id)
        have = f"its versions are 1 to {latest.version}" if latest else "it has no versions yet"
        raise NotFound(
            f"model '{model.name}' has no version {number} ({have})",
            hint=f"list them with `modelyard models versions {model.name}`",
        )
    return version


def _no_alias(conn: sa.Connection, model: ModelRow, alias: str) -> NotFound:
    aliases = rdb.aliases_of_model(conn, model.id)
    known = ", ".join(f"{a} -> {v}" for a, v in aliases.items())
    return NotFound(
        f"model '{model.name}' has no alias '{alias}'",
        hint=f"its aliases are: {known}"
        if known
        else f"set one with `modelyard models alias set {model.name} {alias} VERSION`",
    )


def _resolve(conn: sa.Connection, project: str, ref: ModelRef) -> tuple[ModelRow, VersionRow]:
    model = _model(conn, project, ref.name)
    if ref.version is not None:
        return model, _version(conn, model, ref.version)
    if ref.alias is not None:
        version = rdb.version_of_alias(conn, model.id, ref.alias)
        if version is None:
            raise _no_alias(conn, model, ref.alias)
        return model, version
    latest = rdb.latest_version(conn, model.id)
    if latest is None:
        raise NotFound(f"model '{model.name}' has no versions yet")
    return model, latest


def _detail(
    conn: sa.Connection, project: str, ref: ModelRef, with_events: bool = False
) -> VersionDetail:
    model, version = _resolve(conn, project, ref)
    aliases = rdb.aliases_of_model(conn, model.id)
    events = rdb.get_events(conn, model.id, version.version) if with_events else []
    return VersionDetail(model, version, _pointing_at(aliases, version.version), events)


def _pointing_at(aliases: Mapping[str, int], number: int) -> list[str]:
    return [alias for alias, version in aliases.items() if version == number]


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
