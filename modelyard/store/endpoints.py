"""Reading and writing the rows of serving endpoints: endpoints, variants, rollouts, events.

All SQL about endpoints lives here; `modelyard.serving.endpoint.service` decides what changes and
the supervisor writes what it observes. Functions take an open connection so that callers group
changes into one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelyard.store import endpoint_schema as t

PENDING, ACTIVE, RETIRED = "pending", "active", "retired"
ROLLOUT_FINAL = ("completed", "rolled_back", "cancelled")


@dataclass
class EndpointRow:
    id: int
    project: str
    name: str
    stage: str
    backend: str
    host: str
    port: int | None
    config: dict[str, Any]
    generation: int
    status: str
    status_reason: str | None
    supervisor: str | None
    heartbeat_at: float | None
    created_at: float
    updated_at: float


@dataclass
class VariantRow:
    id: int
    endpoint_id: int
    name: str
    model_ref: str
    package_digest: str
    package_size: int
    replicas: int
    autoscale: dict[str, Any] | None
    weight: float
    state: str
    observed: dict[str, Any] | None
    created_at: float
    retired_at: float | None


@dataclass
class RolloutRow:
    id: int
    endpoint_id: int
    from_variant: str | None
    to_variant: str
    plan: dict[str, Any]
    state: dict[str, Any] | None
    phase: str
    reason: str | None
    created_by: str
    created_at: float
    finished_at: float | None

    @property
    def done(self) -> bool:
        return self.phase in ROLLOUT_FINAL


@dataclass
class EventRow:
    id: int
    endpoint_id: int
    at: float
    kind: str
    message: str


def _row(cls: type[Any], row: sa.Row[Any]) -> Any:
    return cls(**row._asdict())


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


# endpoints -------------------------------------------------------------------------------------


def get_endpoint(
    conn: sa.Connection, project: str, name: str, *, lock: bool = False
) -> EndpointRow | None:
    """The endpoint, or None; `lock` holds its row (PostgreSQL: FOR UPDATE) for the transaction,
    which serialises deploys of one endpoint (SQLite's BEGIN IMMEDIATE serialises every writer)."""
    query = sa.select(t.endpoints).where(
        t.endpoints.c.project == project, t.endpoints.c.name == name
    )
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return _row(EndpointRow, row) if row is not None else None


def list_endpoints(conn: sa.Connection, project: str) -> list[EndpointRow]:
    query = (
        sa.select(t.endpoints).where(t.endpoints.c.project == project).order_by(t.endpoints.c.name)
    )
    return [_row(EndpointRow, r) for r in conn.execute(query)]


def insert_endpoint(conn: sa.Connection, **values: Any) -> EndpointRow:
    now = time.time()
    values = {"created_at": now, "updated_at": now, "generation": 1, **values}
    new_id = _new_id(conn.execute(t.endpoints.insert().values(**values)))
    row = conn.execute(sa.select(t.endpoints).where(t.endpoints.c.id == new_id)).one()
    return _row(EndpointRow, row)  # type: ignore[no-any-return]


def update_endpoint(conn: sa.Connection, endpoint_id: int, **values: Any) -> None:
    values.setdefault("updated_at", time.time())
    conn.execute(t.endpoints.update().where(t.endpoints.c.id == endpoint_id).values(**values))


def bump_generation(conn: sa.Connection, endpoint_id: int) -> None:
    """Tell the supervisor the desired state changed."""
    conn.execute(
        t.endpoints.update()
        .where(t.endpoints.c.id == endpoint_id)
        .values(generation=t.endpoints.c.generation + 1, updated_at=time.time())
    )


def delete_endpoint(conn: sa.Connection, endpoint_id: int) -> None:
    # children first: SQLite enforces ON DELETE CASCADE only with foreign keys on
    for table in (t.endpoint_events, t.endpoint_rollouts, t.endpoint_variants):
        conn.execute(table.delete().where(table.c.endpoint_id == endpoint_id))
    conn.execute(t.endpoints.delete().where(t.endpoints.c.id == endpoint_id))


# variants --------------------------------------------------------------------------------------


def variants(conn: sa.Connection, endpoint_id: int, *, live: bool = True) -> list[VariantRow]:
    """The endpoint's variants, oldest first; `live`: without the retired ones."""
    query = sa.select(t.endpoint_variants).where(t.endpoint_variants.c.endpoint_id == endpoint_id)
    if live:
        query = query.where(t.endpoint_variants.c.state != RETIRED)
    return [_row(VariantRow, r) for r in conn.execute(query.order_by(t.endpoint_variants.c.id))]


def variants_of(conn: sa.Connection, endpoint_ids: list[int]) -> dict[int, list[VariantRow]]:
    """The live variants of several endpoints."""
    found: dict[int, list[VariantRow]] = {i: [] for i in endpoint_ids}
    if not endpoint_ids:
        return found
    query = (
        sa.select(t.endpoint_variants)
        .where(
            t.endpoint_variants.c.endpoint_id.in_(endpoint_ids),
            t.endpoint_variants.c.state != RETIRED,
        )
        .order_by(t.endpoint_variants.c.id)
    )
    for row in conn.execute(query):
        found[row.endpoint_id].append(_row(VariantRow, row))
    return found


def put_variant(conn: sa.Connection, endpoint_id: int, **values: Any) -> None:
    """Insert a variant; a retired one of the same name (an earlier deployment of the same model
    version) makes room for it: its history is in the rollouts and events."""
    conn.execute(
        t.endpoint_variants.delete().where(
            t.endpoint_variants.c.endpoint_id == endpoint_id,
            t.endpoint_variants.c.name == values["name"],
            t.endpoint_variants.c.state == RETIRED,
        )
    )
    conn.execute(
        t.endpoint_variants.insert().values(
            endpoint_id=endpoint_id, created_at=time.time(), **values
        )
    )


def update_variant(conn: sa.Connection, endpoint_id: int, name: str, **values: Any) -> None:
    conn.execute(
        t.endpoint_variants.update()
        .where(
            t.endpoint_variants.c.endpoint_id == endpoint_id,
            t.endpoint_variants.c.name == name,
            t.endpoint_variants.c.state != RETIRED,
        )
        .values(**values)
    )


# rollouts --------------------------------------------------------------------------------------


def current_rollout(conn: sa.Connection, endpoint_id: int) -> RolloutRow | None:
    """The rollout in progress, or None."""
    query = (
        sa.select(t.endpoint_rollouts)
        .where(
            t.endpoint_rollouts.c.endpoint_id == endpoint_id,
            t.endpoint_rollouts.c.phase.not_in(ROLLOUT_FINAL),
        )
        .order_by(t.endpoint_rollouts.c.id)
    )
    row = conn.execute(query).first()
    return _row(RolloutRow, row) if row is not None else None


def get_rollout(conn: sa.Connection, rollout_id: int) -> RolloutRow | None:
    row = conn.execute(
        sa.select(t.endpoint_rollouts).where(t.endpoint_rollouts.c.id == rollout_id)
    ).first()
    return _row(RolloutRow, row) if row is not None else None


def rollouts(conn: sa.Connection, endpoint_id: int, limit: int = 20) -> list[RolloutRow]:
    """The latest rollouts, newest first."""
    query = (
        sa.select(t.endpoint_rollouts)
        .where(t.endpoint_rollouts.c.endpoint_id == endpoint_id)
        .order_by(t.endpoint_rollouts.c.id.desc())
        .limit(limit)
    )
    return [_row(RolloutRow, r) for r in conn.execute(query)]


def insert_rollout(conn: sa.Connection, endpoint_id: int, **values: Any) -> int:
    result = conn.execute(
        t.endpoint_rollouts.insert().values(
            endpoint_id=endpoint_id, created_at=time.time(), phase=PENDING, **values
        )
    )
    return _new_id(result)


def update_rollout(conn: sa.Connection, rollout_id: int, **values: Any) -> None:
    conn.execute(
        t.endpoint_rollouts.update().where(t.endpoint_rollouts.c.id == rollout_id).values(**values)
    )


# events ----------------------------------------------------------------------------------------


def add_event(conn: sa.Connection, endpoint_id: int, kind: str, message: str) -> None:
    conn.execute(
        t.endpoint_events.insert().values(
            endpoint_id=endpoint_id, at=time.time(), kind=kind, message=message
        )
    )


def events(
    conn: sa.Connection, endpoint_id: int, *, after: int = 0, limit: int = 50
) -> list[EventRow]:
    """Events with an id above `after`: the latest `limit` of them, oldest first."""
    query = (
        sa.select(t.endpoint_events)
        .where(t.endpoint_events.c.endpoint_id == endpoint_id, t.endpoint_events.c.id > after)
        .order_by(t.endpoint_events.c.id.desc())
        .limit(limit)
    )
    return [_row(EventRow, r) for r in reversed(conn.execute(query).all())]
