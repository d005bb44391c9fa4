"""Reading and writing data versions and the file-hash cache of data sources (all their SQL).

Functions take an open connection, so callers group changes into one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelyard.store import schema as t

_CHUNK = 500  # rows per IN (...) list: well below SQLite's and PostgreSQL's parameter limits


@dataclass
class DataVersionRow:
    id: int
    project: str
    source: str
    digest: str
    url: str
    file_count: int
    total_bytes: int
    created_at: float
    run_id: int | None


def _version(row: sa.Row[Any]) -> DataVersionRow:
    return DataVersionRow(**row._asdict())


def get_version(
    conn: sa.Connection, project: str, source: str, digest: str
) -> DataVersionRow | None:
    c = t.data_versions.c
    row = conn.execute(
        sa.select(t.data_versions).where(
            c.project == project, c.source == source, c.digest == digest
        )
    ).first()
    return None if row is None else _version(row)


def insert_version(
    conn: sa.Connection,
    *,
    project: str,
    source: str,
    digest: str,
    url: str,
    file_count: int,
    total_bytes: int,
) -> DataVersionRow:
    values = {
        "project": project,
        "source": source,
        "digest": digest,
        "url": url,
        "file_count": file_count,
        "total_bytes": total_bytes,
        "created_at": time.time(),
        "run_id": None,
    }
    pk = conn.execute(t.data_versions.insert().values(**values)).inserted_primary_key
    assert pk is not None
    return DataVersionRow(id=int(pk[0]), **values)  # type: ignore[arg-type]


def list_versions(
    conn: sa.Connection, project: str, source: str | None = None, limit: int = 50
) -> list[DataVersionRow]:
    c = t.data_versions.c
    query = sa.select(t.data_versions).where(c.project == project)
    if source:
        query = query.where(c.source == source)
    query = query.order_by(c.id.desc()).limit(limit)
    return [_version(r) for r in conn.execute(query)]


def find_versions(conn: sa.Connection, project: str, digest_prefix: str) -> list[DataVersionRow]:
    """The versions whose digest starts with `digest_prefix` (with or without "sha256:")."""
    prefix = digest_prefix if digest_prefix.startswith("sha256:") else f"sha256:{digest_prefix}"
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    c = t.data_versions.c
    query = (
        sa.select(t.data_versions)
        .where(c.project == project, c.digest.like(f"{escaped}%", escape="\\"))
        .order_by(c.id)
        .limit(20)
    )
    return [_version(r) for r in conn.execute(query)]


def mark_first_use(
    conn: sa.Connection, project: str, versions: Mapping[str, str], run_id: int
) -> None:
    """Record `run_id` as the first run of each (source, digest) that no run used before."""
    c = t.data_versions.c
    for source, digest in versions.items():
        conn.execute(
            t.data_versions.update()
            .where(c.project == project, c.source == source, c.digest == digest, c.run_id.is_(None))
            .values(run_id=run_id)
        )


# the file-hash cache -----------------------------------------------------------------------------


def known_hashes(conn: sa.Connection, location: str) -> dict[str, tuple[str, str]]:
    """path -> (fingerprint, sha256) of the files last seen at `location`."""
    c = t.data_file_hashes.c
    rows = conn.execute(sa.select(c.path, c.fingerprint, c.sha256).where(c.location == location))
    return {r.path: (r.fingerprint, r.sha256) for r in rows}


def save_hashes(
    conn: sa.Connection,
    location: str,
    hashes: Mapping[str, tuple[str, str]],
    previous: Mapping[str, tuple[str, str]],
) -> None:
    """Make the cache of `location` equal `hashes`, touching only the rows that differ."""
    c = t.data_file_hashes.c
    stale = [p for p, known in previous.items() if hashes.get(p) != known]
    fresh = [p for p, entry in hashes.items() if previous.get(p) != entry]
    for chunk in _chunks(stale):
        conn.execute(t.data_file_hashes.delete().where(c.location == location, c.path.in_(chunk)))
    if fresh:
        conn.execute(
            t.data_file_hashes.insert(),
            [
                {
                    "location": location,
                    "path": p,
                    "fingerprint": hashes[p][0],
                    "sha256": hashes[p][1],
                }
                for p in fresh
            ],
        )


def _chunks(items: Iterable[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == _CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch
