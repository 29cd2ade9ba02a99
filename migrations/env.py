"""Alembic environment: runs on the connection foxbatch hands over, or on `-x db=URL`."""

from __future__ import annotations

from alembic import context

from foxbatch.store.engine import make_engine
from foxbatch.store.tables import metadata

config = context.config


def run_migrations_online() -> None:
    """Run migrations on the caller's connection (foxbatch) or on a fresh engine (alembic CLI)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("db") or config.get_main_option(
        "sqlalchemy.url")
    engine = make_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # type: ignore[attr-defined]
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("foxbatch migrations run online only")
run_migrations_online()
