"""data versions: manifests of data sources, the data each run reads, a file-hash cache

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Generated with Alembic's autogenerate against a database at 0001, then adjusted: the new column of
`runs` is added with a plain ALTER TABLE (no batch rebuild: on SQLite a rebuild of `runs` drops
the table, which cascade-deletes every step and event with foreign keys on), and `runs.trigger`
is widened only where VARCHAR lengths are enforced (not SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_file_hashes",
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=300), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("location", "path", name=op.f("pk_data_file_hashes")),
    )
    op.create_table(
        "data_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_data_versions_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_versions")),
        sa.UniqueConstraint(
            "project", "source", "digest", name=op.f("uq_data_versions_project_source_digest")
        ),
    )
    op.add_column("runs", sa.Column("data_versions", sa.JSON(), nullable=True))
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "runs",
            "trigger",
            existing_type=sa.String(length=40),
            type_=sa.String(length=200),
            existing_nullable=False,
            existing_server_default="manual",
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "runs",
            "trigger",
            existing_type=sa.String(length=200),
            type_=sa.String(length=40),
            existing_nullable=False,
            existing_server_default="manual",
        )
    op.drop_column("runs", "data_versions")
    op.drop_table("data_versions")
    op.drop_table("data_file_hashes")
