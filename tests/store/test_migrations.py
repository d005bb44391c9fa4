"""Schema migrations: upgrading a database at 0001 keeps its runs, and the migrations match the
tables of `modelyard.store.schema` (what Alembic's autogenerate would compare)."""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from modelyard.store import runs as db
from modelyard.store import schema as t
from modelyard.store.db import _MIGRATIONS, HEAD_REVISION, Database, _create_engine

REGISTRY_TABLES = {"models", "model_versions", "model_aliases", "model_events"}


def migrate(engine: sa.Engine, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


def differences(database: Database) -> list[object]:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": t.compare_column_types})
        return list(compare_metadata(context, t.complete_metadata()))


def insert_old_run(engine: sa.Engine) -> int:
    """A run with a step, an attempt and events, written with the 0001 columns only."""
    now = time.time()
    with engine.begin() as conn:
        run_id = db.insert_run(
            conn,
            project="p",
            project_dir="/p",
            pipeline="train",
            status=db.SUCCEEDED,
            params={"depth": 3},
            definition={"name": "train", "steps": []},
            options={},
            environment_digest="sha256:" + "0" * 64,
            trigger="manual",
            started_at=now,
            finished_at=now,
        )
        db.insert_steps(conn, run_id, [("prepare", "run")])
        # selected by hand: get_steps reads today's columns, which a 0001 database lacks
        step_id = conn.execute(
            sa.select(t.step_runs.c.id).where(t.step_runs.c.run_id == run_id)
        ).scalar_one()
        db.insert_attempt(conn, step_run_id=step_id, number=1, status="succeeded", started_at=now)
        db.add_event(conn, run_id, "run-created")
        db.add_event(conn, run_id, "run-succeeded")
    return run_id


def test_upgrading_from_0001_keeps_the_runs(database_url: str):
    engine = _create_engine(database_url)
    migrate(engine, "0001")
    run_id = insert_old_run(engine)
    engine.dispose()

    database = Database(database_url)  # migrates to the head on first use
    try:
        assert database.current_revision() == HEAD_REVISION == "0006"
        with database.begin() as conn:
            run = db.get_run(conn, run_id)
            steps = db.get_steps(conn, run_id)
            attempts = db.get_attempts(conn, steps["prepare"].id)
            events = db.get_events(conn, run_id)
            tables = set(sa.inspect(conn).get_table_names())
        assert (run.status, run.params, run.data_versions) == ("succeeded", {"depth": 3}, None)
        assert [s.status for s in steps.values()] == ["pending"]
        assert len(attempts) == 1 and len(events) == 2  # nothing was cascade-deleted
        assert {"data_versions", "data_file_hashes", *REGISTRY_TABLES} <= tables
        # a trigger longer than 0001's 40 characters fits
        trigger = "data:" + "s" * 60 + "@0123456789ab"
        with database.begin() as conn:
            db.update_run(conn, run_id, trigger=trigger, data_versions={"s": "sha256:1"})
            assert db.get_run(conn, run_id).trigger == trigger
        assert differences(database) == []
    finally:
        database.dispose()


def test_upgrading_from_0002_adds_the_registry_and_keeps_the_runs(database_url: str):
    engine = _create_engine(database_url)
    migrate(engine, "0002")
    run_id = insert_old_run(engine)
    with engine.begin() as conn:
        db.update_run(conn, run_id, data_versions={"abalone": "sha256:1"})
    engine.dispose()

    database = Database(database_url)
    try:
        assert database.current_revision() == HEAD_REVISION
        with database.begin() as conn:
            run = db.get_run(conn, run_id)
            steps = db.get_steps(conn, run_id)
            tables = set(sa.inspect(conn).get_table_names())
        assert run.data_versions == {"abalone": "sha256:1"}
        assert (run.git_commit, run.git_dirty, run.git_branch) == (None, None, None)
        assert list(steps) == ["prepare"]  # the new columns did not rebuild (and empty) `runs`
        assert tables >= REGISTRY_TABLES
        with database.begin() as conn:
            db.update_run(conn, run_id, git_commit="a" * 40, git_dirty=True, git_branch="main")
            assert db.get_run(conn, run_id).git_dirty is True
        assert differences(database) == []
    finally:
        database.dispose()


def test_the_migration_goes_down_and_up_again(database_url: str):
    database = Database(database_url)
    try:
        run_id = insert_old_run(database.engine)
        migrate(database.engine, "0001", down=True)
        assert database.current_revision() == "0001"
        with database.engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
        assert "data_versions" not in tables
        assert not REGISTRY_TABLES & tables
        migrate(database.engine, "head")
        with database.begin() as conn:
            assert db.get_run(conn, run_id).status == "succeeded"
        assert differences(database) == []
    finally:
        database.dispose()


def test_sqlite_varchar_lengths_do_not_count():
    """SQLite ignores VARCHAR lengths, so the comparison does too (and no rebuild is needed)."""
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert t.compare_column_types(context, None, None, sa.String(40), sa.String(200)) is False
        assert t.compare_column_types(context, None, None, sa.String(40), sa.Text()) is True
        assert t.compare_column_types(context, None, None, sa.Integer(), sa.Integer()) is None


def _shape(engine: sa.Engine) -> dict[str, object]:
    """Tables with their columns, keys, foreign keys and indexes, by name (SQLite ignores the
    lengths of VARCHAR columns, and an ALTER of one is skipped there: types by kind only)."""
    inspector = sa.inspect(engine)
    shape: dict[str, object] = {}
    for table in sorted(inspector.get_table_names()):
        columns = [
            (c["name"], type(c["type"]).__name__, c["nullable"])
            for c in inspector.get_columns(table)
        ]
        keys = inspector.get_pk_constraint(table)
        foreign = sorted(
            (f["name"], tuple(f["constrained_columns"]), f["referred_table"])
            for f in inspector.get_foreign_keys(table)
        )
        indexes = sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes(table)
        )
        shape[table] = (
            sorted(columns),
            keys["name"],
            keys["constrained_columns"],
            foreign,
            indexes,
        )
    return shape


def test_a_new_database_gets_the_head_schema_that_the_migrations_build(tmp_path):
    created = Database(f"sqlite:///{tmp_path / 'created.db'}")  # empty: tables made directly
    replayed_engine = _create_engine(f"sqlite:///{tmp_path / 'replayed.db'}")
    migrate(replayed_engine, "head")
    try:
        assert created.current_revision() == HEAD_REVISION
        assert differences(created) == []
        assert _shape(created.engine) == _shape(replayed_engine)
        # and later migrations can start from it: down to the first revision and up again
        migrate(created.engine, "0001", down=True)
        migrate(created.engine, "head")
        assert _shape(created.engine) == _shape(replayed_engine)
    finally:
        created.dispose()
        replayed_engine.dispose()


def test_a_new_database_is_created_without_importing_alembic(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'new.db'}"
    code = (
        "import sys\n"
        "from modelyard.store.db import Database\n"
        f"Database({url!r}).dispose()\n"
        "print('alembic' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
