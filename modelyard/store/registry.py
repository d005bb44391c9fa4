"""Reading and writing the model registry's rows: models, versions, aliases and model events.

All SQL about the registry lives here; `modelyard.registry.service` decides what changes.
Functions take an open connection so that callers group changes into one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelyard.store import registry_schema as t

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


@dataclass
class ModelRow:
    id: int
    project: str
    name: str
    description: str
    created_at: float


@dataclass
class VersionRow:
    id: int
    model_id: int
    version: int
    package_digest: str
    package_size: int
    flavor: str
    signature: dict[str, Any] | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    lineage: dict[str, Any]
    gate: list[dict[str, Any]]
    run_id: int | None
    approval_status: str
    decided_by: str | None
    decided_at: float | None
    decision_comment: str | None
    tags: dict[str, str]
    card: str
    created_at: float
    evidence_digest: str | None = None  # the approval evidence folder, when one was built


@dataclass
class ModelEventRow:
    id: int
    model_id: int
    version: int | None
    kind: str
    actor: str
    at: float
    message: str


def _row(cls: type[Any], row: sa.Row[Any]) -> Any:
    return cls(**row._asdict())


# models ----------------------------------------------------------------------------------------


def get_model(
    conn: sa.Connection, project: str, name: str, *, lock: bool = False
) -> ModelRow | None:
    """The model, or None. `lock` takes its row lock (PostgreSQL: SELECT ... FOR UPDATE) until
    the transaction ends; SQLite's BEGIN IMMEDIATE already serialises every writer."""
    query = sa.select(t.models).where(t.models.c.project == project, t.models.c.name == name)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return _row(ModelRow, row) if row is not None else None


def lock_or_create_model(
    conn: sa.Connection, project: str, name: str, description: str
) -> ModelRow:
    """The model's row, created if new, locked for the rest of the transaction.

    Two registrations of a new model may race to create it: the loser's insert fails on the
    unique (project, name) inside a savepoint, which is rolled back, and it locks the winner's.
    """
    model = get_model(conn, project, name, lock=True)
    if model is not None:
        return model
    try:
        with conn.begin_nested():
            conn.execute(
                t.models.insert().values(
                    project=project, name=name, description=description, created_at=time.time()
                )
            )
    except sa.exc.IntegrityError:
        pass  # created meanwhile by another transaction: lock that one
    model = get_model(conn, project, name, lock=True)
    assert model is not None
    return model


def list_models(conn: sa.Connection, project: str) -> list[ModelRow]:
    query = sa.select(t.models).where(t.models.c.project == project).order_by(t.models.c.name)
    return [_row(ModelRow, r) for r in conn.execute(query)]


def update_model(conn: sa.Connection, model_id: int, **values: Any) -> None:
    conn.execute(t.models.update().where(t.models.c.id == model_id).values(**values))


# versions --------------------------------------------------------------------------------------


def next_version_number(conn: sa.Connection, model_id: int) -> int:
    """1 + the highest version of the model. Call it with the model's row locked: the lock makes
    concurrent registrations number their versions one after the other."""
    query = sa.select(sa.func.max(t.model_versions.c.version)).where(
        t.model_versions.c.model_id == model_id
    )
    return int(conn.execute(query).scalar() or 0) + 1


def insert_version(conn: sa.Connection, **values: Any) -> VersionRow:
    values.setdefault("created_at", time.time())
    pk = conn.execute(t.model_versions.insert().values(**values)).inserted_primary_key
    assert pk is not None
    version = get_version_by_id(conn, int(pk[0]))
    assert version is not None
    return version


def get_version(conn: sa.Connection, model_id: int, version: int) -> VersionRow | None:
    row = conn.execute(
        sa.select(t.model_versions).where(
            t.model_versions.c.model_id == model_id, t.model_versions.c.version == version
        )
    ).first()
    return _row(VersionRow, row) if row is not None else None


def get_version_by_id(conn: sa.Connection, version_id: int) -> VersionRow | None:
    row = conn.execute(
        sa.select(t.model_versions).where(t.model_versions.c.id == version_id)
    ).first()
    return _row(VersionRow, row) if row is not None else None


def latest_version(conn: sa.Connection, model_id: int) -> VersionRow | None:
    row = conn.execute(
        sa.select(t.model_versions)
        .where(t.model_versions.c.model_id == model_id)
        .order_by(t.model_versions.c.version.desc())
        .limit(1)
    ).first()
    return _row(VersionRow, row) if row is not None else None


def list_versions(conn: sa.Connection, model_id: int) -> list[VersionRow]:
    rows = conn.execute(
        sa.select(t.model_versions)
        .where(t.model_versions.c.model_id == model_id)
        .order_by(t.model_versions.c.version.desc())
    )
    return [_row(VersionRow, r) for r in rows]


def version_counts(conn: sa.Connection, model_ids: list[int]) -> dict[int, tuple[int, int]]:
    """model id -> (number of versions, highest version)."""
    if not model_ids:
        return {}
    rows = conn.execute(
        sa.select(
            t.model_versions.c.model_id,
            sa.func.count(),
            sa.func.max(t.model_versions.c.version),
        )
        .where(t.model_versions.c.model_id.in_(model_ids))
        .group_by(t.model_versions.c.model_id)
    )
    return {int(m): (int(n), int(top)) for m, n, top in rows}


def decide_version(
    conn: sa.Connection, version_id: int, status: str, actor: str, comment: str
) -> bool:
    """Record a decision on a pending version; False if it is no longer pending (someone else
    decided first: the WHERE makes the check and the change one statement)."""
    result = conn.execute(
        t.model_versions.update()
        .where(t.model_versions.c.id == version_id, t.model_versions.c.approval_status == PENDING)
        .values(
            approval_status=status,
            decided_by=actor,
            decided_at=time.time(),
            decision_comment=comment,
        )
    )
    return result.rowcount == 1


# aliases ---------------------------------------------------------------------------------------


def aliases_of_model(conn: sa.Connection, model_id: int) -> dict[str, int]:
    """alias -> version number, sorted by alias."""
    rows = conn.execute(
        sa.select(t.model_aliases.c.alias, t.model_versions.c.version)
        .join(t.model_versions, t.model_versions.c.id == t.model_aliases.c.version_id)
        .where(t.model_aliases.c.model_id == model_id)
        .order_by(t.model_aliases.c.alias)
    )
    return {str(alias): int(version) for alias, version in rows}


def aliases_of_models(conn: sa.Connection, model_ids: list[int]) -> dict[int, dict[str, int]]:
    if not model_ids:
        return {}
    rows = conn.execute(
        sa.select(t.model_aliases.c.model_id, t.model_aliases.c.alias, t.model_versions.c.version)
        .join(t.model_versions, t.model_versions.c.id == t.model_aliases.c.version_id)
        .where(t.model_aliases.c.model_id.in_(model_ids))
        .order_by(t.model_aliases.c.alias)
    )
    found: dict[int, dict[str, int]] = {}
    for model_id, alias, version in rows:
        found.setdefault(int(model_id), {})[str(alias)] = int(version)
    return found


def version_of_alias(conn: sa.Connection, model_id: int, alias: str) -> VersionRow | None:
    row = conn.execute(
        sa.select(t.model_versions)
        .join(t.model_aliases, t.model_aliases.c.version_id == t.model_versions.c.id)
        .where(t.model_aliases.c.model_id == model_id, t.model_aliases.c.alias == alias)
    ).first()
    return _row(VersionRow, row) if row is not None else None


def set_alias(conn: sa.Connection, model_id: int, alias: str, version_id: int, actor: str) -> None:
    """Point the alias at a version (replacing where it pointed); lock the model row first."""
    conn.execute(
        t.model_aliases.delete().where(
            t.model_aliases.c.model_id == model_id, t.model_aliases.c.alias == alias
        )
    )
    conn.execute(
        t.model_aliases.insert().values(
            model_id=model_id, alias=alias, version_id=version_id, set_by=actor, set_at=time.time()
        )
    )


def delete_alias(conn: sa.Connection, model_id: int, alias: str) -> bool:
    result = conn.execute(
        t.model_aliases.delete().where(
            t.model_aliases.c.model_id == model_id, t.model_aliases.c.alias == alias
        )
    )
    return result.rowcount == 1


# events ----------------------------------------------------------------------------------------


def add_event(
    conn: sa.Connection,
    model_id: int,
    kind: str,
    actor: str,
    message: str = "",
    version: int | None = None,
) -> None:
    conn.execute(
        t.model_events.insert().values(
            model_id=model_id,
            version=version,
            kind=kind,
            actor=actor,
            message=message,
            at=time.time(),
        )
    )


def get_events(
    conn: sa.Connection, model_id: int, version: int | None = None
) -> list[ModelEventRow]:
    """The model's events, oldest first; with `version`, only those about that version."""
    query = sa.select(t.model_events).where(t.model_events.c.model_id == model_id)
    if version is not None:
        query = query.where(t.model_events.c.version == version)
    return [_row(ModelEventRow, r) for r in conn.execute(query.order_by(t.model_events.c.id))]
