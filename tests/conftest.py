"""Shared fixtures: the metadata database on SQLite and, where it runs, PostgreSQL.

Tests that take `database_url` run once per backend. PostgreSQL tests use a fresh schema each (via
the connection's search_path) in the database named by MODELYARD_TEST_POSTGRES_URL (default: the
local server's `test` database), and skip with the reason when the server is not reachable.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# runs in tests never start the detached MLflow pusher (tests of tracking push explicitly)
os.environ["MODELYARD_TRACKING_AUTO_PUSH"] = "0"
os.environ.pop("MLFLOW_TRACKING_URI", None)

POSTGRES_URL = os.environ.get(
    "MODELYARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_unavailable() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'modelyard[postgres]')"
    dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL is not reachable at {POSTGRES_URL}: {str(exc).strip()[:120]}"


_PG_SKIP: list[str | None] = []


def postgres_skip_reason() -> str | None:
    if not _PG_SKIP:
        _PG_SKIP.append(_postgres_unavailable())
    return _PG_SKIP[0]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of its own, dropped afterwards."""
    reason = postgres_skip_reason()
    if reason:
        pytest.skip(reason)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The metadata DB URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'modelyard.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, for the whole session."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'modelyard[s3]')")
    server_mod = pytest.importorskip(
        "moto.server", reason="moto[server] is not installed (pip install 'modelyard[dev]')"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_options(s3_endpoint: str) -> dict[str, Any]:
    """fsspec storage options for the moto server (dummy credentials)."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "eu-west-1"},
    }


@pytest.fixture(scope="session")
def s3_bucket(s3_options: dict[str, Any]) -> str:
    import s3fs

    s3fs.S3FileSystem(**s3_options).mkdir("modelyard-test")
    return "modelyard-test"


@pytest.fixture
def package_copy(package: Any, tmp_path: Path) -> Iterator[Path]:
    """A copy of the test module's `package` (a PackageInfo) that a test may damage."""
    copy = tmp_path / "copy"
    shutil.copytree(package.path, copy)
    yield copy
