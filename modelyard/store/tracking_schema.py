"""Tables of experiment tracking (SQLAlchemy Core), part of `modelyard.store.schema.metadata`.

Metrics and parameters that steps log are recorded here, in the transaction that records the
step's success; `tracking_outbox` holds what still has to reach MLflow (pushed in the background by
`modelyard.tracking.pusher`, so MLflow is never on a run's critical path). Defined apart from the
run tables, like the registry's, so that only the code that tracks pays for creating them.
"""

from __future__ import annotations

import sqlalchemy as sa

from modelyard.store.schema import metadata

run_metrics = sa.Table(
    "run_metrics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("step_index", sa.Integer, nullable=False, server_default="0"),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_run_metrics_run_id_step", "run_id", "step"),
)

# step NULL: a parameter of the run (its resolved pipeline parameters)
run_params = sa.Table(
    "run_params",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step", sa.String(200)),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index("ix_run_params_run_id", "run_id"),
)

# What MLflow has not been told yet, in id order per run: kind "params", "metrics", "status",
# "step" (a step ended: its nested run) or "artifact" (an output to log on the step's run).
tracking_outbox = sa.Table(
    "tracking_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("pushed_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Index("ix_tracking_outbox_pushed_at_id", "pushed_at", "id"),
)
