"""Tables of the metadata database (SQLAlchemy Core). Alembic migrations create and change them.

Times are UNIX seconds (float): portable across SQLite and PostgreSQL and cheap to compare.
JSON columns hold the run's frozen pipeline definition, parameters, outputs and values.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("project_dir", sa.Text, nullable=False),
    sa.Column("pipeline", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("definition", sa.JSON, nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("environment_digest", sa.String(80), nullable=False),
    # "manual", or e.g. "data:SOURCE@<digest prefix>" (200: room for long source names)
    sa.Column("trigger", sa.String(200), nullable=False, server_default="manual"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("message", sa.Text),
    # which process drives the run, until when (a lease renewed by a heartbeat)
    sa.Column("owner", sa.String(200)),
    sa.Column("lease_until", sa.Float),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    # {source: manifest digest}: the data versions the run reads (NULL for runs before 0002)
    sa.Column("data_versions", sa.JSON),
    # the project's git state when the run was created (all NULL: not a git repo, or before 0003)
    sa.Column("git_commit", sa.String(64)),
    sa.Column("git_dirty", sa.Boolean),  # NULL: unknown (no git binary to compare the tree)
    sa.Column("git_branch", sa.String(200)),
    # the run's MLflow run (set by the tracking pusher; all NULL before 0004)
    sa.Column("tracking_uri", sa.Text),
    sa.Column("mlflow_experiment_id", sa.String(64)),
    sa.Column("mlflow_run_id", sa.String(64)),
)

step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("cache_key", sa.String(80)),
    sa.Column("cached", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("not_before", sa.Float),
    sa.Column("deadline", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("outputs", sa.JSON),
    sa.Column("values", sa.JSON),
    sa.Column("message", sa.Text),
    sa.Column("mlflow_run_id", sa.String(64)),  # the step's nested MLflow run, once pushed
    sa.UniqueConstraint("run_id", "name"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "step_run_id",
        sa.Integer,
        sa.ForeignKey("step_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("host", sa.String(200)),
    sa.Column("pid", sa.Integer),
    sa.Column("pid_started_at", sa.Float),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("log_path", sa.Text),
    sa.Column("log_digest", sa.String(80)),
    sa.UniqueConstraint("step_run_id", "number"),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("digest", sa.String(80), primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

cache_entries = sa.Table(
    "cache_entries",
    metadata,
    sa.Column("cache_key", sa.String(80), primary_key=True),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("values", sa.JSON, nullable=False),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "step_run_id",
        sa.Integer,
        sa.ForeignKey("step_runs.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,  # one decision per waiting step: a second approval is refused by the DB
    ),
    sa.Column("run_id", sa.Integer, nullable=False, index=True),
    sa.Column("decision", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False, server_default=""),
    sa.Column("decided_at", sa.Float, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step", sa.String(200)),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_events_run_id_id", "run_id", "id"),
)

# A data version: one manifest of a data source. Digests are unique per project and source, so
# "is this version new?" is one lookup, and two watchers racing on one version insert it once.
data_versions = sa.Table(
    "data_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("digest", sa.String(80), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("file_count", sa.Integer, nullable=False),
    sa.Column("total_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # the run that first used this version, if any (kept when the run is deleted: NULL)
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL")),
    sa.UniqueConstraint("project", "source", "digest"),
)

# What the last snapshot of a location learnt about each file: its fingerprint (local: size,
# mtime, ctime and inode; remote: ETag and size) and its sha256, so unchanged files are neither
# re-read nor, on S3, downloaded again. A cache only: losing rows costs time, never correctness.
data_file_hashes = sa.Table(
    "data_file_hashes",
    metadata,
    sa.Column("location", sa.Text, primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.String(300), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
)


def complete_metadata() -> sa.MetaData:
    """`metadata` with every table of modelyard, for Alembic's comparisons.

    The tables of subsystems that most commands never touch (the model registry, tracking) are
    defined in their own modules, so that creating them (a few milliseconds) is paid only by the
    commands that use them; this imports those modules so that the metadata is complete.
    """
    # importing them registers their tables
    import modelyard.store.endpoint_schema
    import modelyard.store.registry_schema
    import modelyard.store.tracking_schema  # noqa: F401

    return metadata


def compare_column_types(
    context: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_type: Any,
    metadata_type: Any,
) -> bool | None:
    """Alembic's type comparison, except that SQLite's VARCHAR lengths do not count.

    SQLite ignores the length of VARCHAR, so migrations do not rebuild a SQLite table only to
    change one (a rebuild of `runs` would cascade-delete its steps with foreign keys on).
    """
    lengths_only = isinstance(inspected_type, sa.String) and isinstance(metadata_type, sa.String)
    if context.dialect.name == "sqlite" and lengths_only:
        return type(inspected_type.as_generic()) is not type(metadata_type.as_generic())
    return None  # the default comparison
