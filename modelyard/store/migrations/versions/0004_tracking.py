"""experiment tracking: metrics and parameters of runs, the MLflow outbox, the MLflow link of runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21

The new columns of `runs` are added with plain ALTER TABLE statements (never a batch rebuild: on
SQLite a rebuild of `runs` would cascade-delete its steps), as in 0003.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("step_index", sa.Integer(), server_default="0", nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_metrics_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_metrics")),
    )
    op.create_index("ix_run_metrics_run_id_step", "run_metrics", ["run_id", "step"])
    op.create_table(
        "run_params",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=True),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_params_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_params")),
    )
    op.create_index("ix_run_params_run_id", "run_params", ["run_id"])
    op.create_table(
        "tracking_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("pushed_at", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_tracking_outbox_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_outbox")),
    )
    op.create_index("ix_tracking_outbox_pushed_at_id", "tracking_outbox", ["pushed_at", "id"])
    op.add_column("runs", sa.Column("tracking_uri", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("mlflow_experiment_id", sa.String(length=64), nullable=True))
    op.add_column("runs", sa.Column("mlflow_run_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "mlflow_run_id")
    op.drop_column("runs", "mlflow_experiment_id")
    op.drop_column("runs", "tracking_uri")
    op.drop_index("ix_tracking_outbox_pushed_at_id", table_name="tracking_outbox")
    op.drop_table("tracking_outbox")
    op.drop_index("ix_run_params_run_id", table_name="run_params")
    op.drop_table("run_params")
    op.drop_index("ix_run_metrics_run_id_step", table_name="run_metrics")
    op.drop_table("run_metrics")
