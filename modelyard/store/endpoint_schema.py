"""Tables of serving endpoints (SQLAlchemy Core), part of `modelyard.store.schema.metadata`.

An endpoint is a named, stable address in a stage; its variants are model versions with a traffic
weight and a replica count; a rollout moves traffic from one variant to another; events are its
history. The CLI writes the desired state (variants, rollouts) and bumps `generation`; the
endpoint's supervisor process applies it and writes back what it observes (`observed`, status,
heartbeat), so that `endpoint list` and `show` read the truth from here. Times are UNIX seconds.
"""

from __future__ import annotations

import sqlalchemy as sa

from modelyard.store.schema import metadata

endpoints = sa.Table(
    "endpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),  # dev | prod
    sa.Column("backend", sa.String(20), nullable=False),  # local (processes) | ray
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("port", sa.Integer),  # NULL until the supervisor first binds a free port
    # serving options and guards (API keys only as sha256 digests)
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),  # bumped by every change of desired state
    sa.Column("status", sa.String(20), nullable=False),  # as the supervisor last wrote it
    sa.Column("status_reason", sa.Text),
    sa.Column("supervisor", sa.String(200)),  # host:pid:start-time of the supervisor process
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("project", "name"),
)

endpoint_variants = sa.Table(
    "endpoint_variants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "endpoint_id",
        sa.Integer,
        sa.ForeignKey("endpoints.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.String(200), nullable=False),  # "abalone-3"
    sa.Column("model_ref", sa.String(300), nullable=False),  # "abalone/3"
    sa.Column("package_digest", sa.String(80), nullable=False),
    sa.Column("package_size", sa.BigInteger, nullable=False),
    sa.Column("replicas", sa.Integer, nullable=False),  # wanted (the autoscaler's last decision)
    sa.Column("autoscale", sa.JSON),  # the policy; NULL: a fixed replica count
    sa.Column("weight", sa.Float, nullable=False),  # share of traffic, percent
    sa.Column("state", sa.String(20), nullable=False),  # pending | active | retired
    sa.Column("observed", sa.JSON),  # replicas and traffic as the supervisor last saw them
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("retired_at", sa.Float),
    sa.UniqueConstraint("endpoint_id", "name"),
)

endpoint_rollouts = sa.Table(
    "endpoint_rollouts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "endpoint_id",
        sa.Integer,
        sa.ForeignKey("endpoints.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("from_variant", sa.String(200)),  # NULL: the endpoint's first variant
    sa.Column("to_variant", sa.String(200), nullable=False),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Column("state", sa.JSON),  # NULL until the supervisor starts it
    sa.Column("phase", sa.String(20), nullable=False),  # pending | waiting_ready | baking | ...
    sa.Column("reason", sa.Text),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
)

endpoint_events = sa.Table(
    "endpoint_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "endpoint_id",
        sa.Integer,
        sa.ForeignKey("endpoints.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),  # deploy | rollout | scale | replica | ...
    sa.Column("message", sa.Text, nullable=False),
)
