"""Alembic migrations of the store; `digest db upgrade` runs them on SQLite and PostgreSQL."""
