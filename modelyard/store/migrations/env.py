"""Alembic environment: modelyard passes an open connection; `alembic` CLI users pass a URL."""

from __future__ import annotations

from alembic import context

from modelyard.store.schema import compare_column_types, complete_metadata

metadata = complete_metadata()

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # pragma: no cover - only when a user runs the alembic CLI by hand
    import sqlalchemy as sa

    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=metadata, compare_type=compare_column_types
        )
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=compare_column_types,
    )
    with context.begin_transaction():
        context.run_migrations()
