"""approval evidence of model versions; the nested MLflow run of each step

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21

Plain ALTER TABLE statements (never a batch rebuild: on SQLite a rebuild of `step_runs` would
cascade-delete its attempts), as in 0003 and 0004.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("step_runs", sa.Column("mlflow_run_id", sa.String(length=64), nullable=True))
    op.add_column(
        "model_versions", sa.Column("evidence_digest", sa.String(length=80), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("model_versions", "evidence_digest")
    op.drop_column("step_runs", "mlflow_run_id")
