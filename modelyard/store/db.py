"""The metadata database: engine set-up (SQLite or PostgreSQL) and schema migrations.

SQLite runs in WAL mode with a busy timeout and `BEGIN IMMEDIATE` transactions, so several
processes on one machine can drive runs safely; PostgreSQL serves teams and several workers.
Migrations run through Alembic, but only when the stored revision is behind: the common path is
one cheap query, which keeps the CLI fast. An empty database (a new project) gets the head schema
from the table definitions directly and is stamped with the head revision, as Alembic's docs
advise: importing Alembic and replaying every migration would cost a new project's first command
a few hundred milliseconds (a test proves both ways give the same schema).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from modelyard.errors import DatabaseError, MissingDependency

HEAD_REVISION = "0006"
_MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        self.engine = _create_engine(url)
        if migrate:
            self.ensure_schema()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A transaction: committed when the block ends, rolled back on error."""
        with (
            self._reported(
                sa.exc.OperationalError,
                "database error",
                "check that the database is reachable and not locked by a stuck process",
            ),
            self.engine.begin() as conn,
        ):
            yield conn

    @contextlib.contextmanager
    def _reported(self, kind: type[Exception], what: str, hint: str) -> Iterator[None]:
        """Turn a driver error into a DatabaseError that names the database (never a password)."""
        try:
            yield
        except kind as exc:
            raise DatabaseError(
                f"{what}: {_first_line(exc)}", where=self.safe_url, hint=hint
            ) from None

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def current_revision(self) -> str | None:
        with (
            self._reported(
                sa.exc.OperationalError,
                "cannot open the metadata database",
                "check MODELYARD_DATABASE_URL, or that the server is running",
            ),
            self.engine.connect() as conn,
        ):
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()

    def ensure_schema(self) -> None:
        if self.current_revision() == HEAD_REVISION:
            return
        with self._migration_lock():
            if self.current_revision() == HEAD_REVISION:
                return
            if self._is_empty():
                self._create_head_schema()
            else:
                self._upgrade()

    def _is_empty(self) -> bool:
        from modelyard.store.schema import complete_metadata

        with self.engine.connect() as conn:
            existing = set(sa.inspect(conn).get_table_names())
        return not existing & {*complete_metadata().tables, "alembic_version"}

    def _create_head_schema(self) -> None:
        from modelyard.store.schema import complete_metadata

        version = sa.Table(  # the table Alembic keeps its revision in, as Alembic creates it
            "alembic_version",
            sa.MetaData(),
            sa.Column("version_num", sa.String(32), nullable=False),
            sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
        )
        with (
            self._reported(
                sa.exc.DBAPIError,
                "cannot create the metadata tables",
                "check that the database (and schema) exist and the user may create tables",
            ),
            self.engine.begin() as conn,
        ):
            complete_metadata().create_all(conn)
            version.create(conn)
            conn.execute(version.insert().values(version_num=HEAD_REVISION))

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with (
            self._reported(
                sa.exc.DBAPIError,
                "cannot create or migrate the metadata tables",
                "check that the database (and schema) exist and the user may create tables",
            ),
            self.engine.begin() as conn,
        ):
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """Only one process migrates; the others wait and then see the new revision."""
        if self.dialect == "sqlite":
            database = self.engine.url.database
            if not database or database == ":memory:":
                yield
                return
            with open(f"{database}.migrate-lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        elif self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(b"modelyard-migrate").digest()[:7], "big")
            with self.engine.connect() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_lock({key})")
                try:
                    yield
                finally:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
                    conn.commit()
        else:
            yield

    def dispose(self) -> None:
        self.engine.dispose()


def _create_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot create the folder of the SQLite database: {exc.strerror or exc}",
                    where=database,
                    hint="set MODELYARD_DATABASE_URL to a writable place, or fix the permissions",
                ) from None
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return sa.create_engine(parsed, pool_pre_ping=True)
        except ModuleNotFoundError:
            raise MissingDependency("psycopg", "postgres", "A PostgreSQL database") from None
    try:
        return sa.create_engine(parsed)
    except (ModuleNotFoundError, sa.exc.NoSuchModuleError) as exc:
        raise DatabaseError(
            f"unsupported database URL: {exc}",
            where=parsed.render_as_string(hide_password=True),
            hint="use sqlite:///path/to/file.db or postgresql://user@host/db",
        ) from None


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's deferred BEGIN:
    # a deferred transaction that later writes can fail with "database is locked" at once.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]
