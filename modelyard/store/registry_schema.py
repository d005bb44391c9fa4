"""Tables of the model registry (SQLAlchemy Core), part of `modelyard.store.schema.metadata`.

Defined apart from the run tables so that only the commands that use the registry pay for
creating them; `schema.complete_metadata()` imports this module for Alembic. Times are UNIX
seconds (float), as in `schema`.
"""

from __future__ import annotations

import sqlalchemy as sa

from modelyard.store.schema import metadata

# The model registry. A model is a name in a project; its versions are immutable packages (dir
# artifacts) with metrics, lineage and an approval status; aliases point at versions.
models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    # the row a registration locks (SELECT ... FOR UPDATE) to number its version
    sa.UniqueConstraint("project", "name"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("package_digest", sa.String(80), nullable=False),
    sa.Column("package_size", sa.BigInteger, nullable=False),
    sa.Column("flavor", sa.String(100), nullable=False),
    sa.Column("signature", sa.JSON),  # MLflow's signature, parsed; NULL without one
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    # run, step, pipeline, git state, data versions, input digests, parent versions
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("gate", sa.JSON, nullable=False),  # the gate rules' results at registration
    # the run that registered it (kept when the run is deleted: NULL; lineage keeps the id)
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL"), index=True),
    sa.Column("approval_status", sa.String(20), nullable=False),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", sa.Float),
    sa.Column("decision_comment", sa.Text),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("card", sa.Text, nullable=False),  # the model card (markdown)
    # the folder a reviewer saw (report.html, summary.md, evidence.json); NULL without evidence
    sa.Column("evidence_digest", sa.String(80)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("model_id", "version"),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column(
        "model_id",
        sa.Integer,
        sa.ForeignKey("models.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("alias", sa.String(200), primary_key=True),
    sa.Column(
        "version_id",
        sa.Integer,
        sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("set_by", sa.String(200), nullable=False),
    sa.Column("set_at", sa.Float, nullable=False),
)

# Who did what to a model, when: registrations, decisions, alias changes (an audit trail).
model_events = sa.Table(
    "model_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("version", sa.Integer),  # the version number it concerns, if any
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_model_events_model_id_id", "model_id", "id"),
)
