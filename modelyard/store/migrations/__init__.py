"""Alembic migrations of the metadata database (run by `modelyard.store.db`)."""
