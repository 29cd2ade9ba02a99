"""Alembic migrations of the foxbatch task store (installed as the package foxbatch.migrations)."""
