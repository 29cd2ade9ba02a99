"""Schema versions: find the shipped migrations, upgrade a database, refuse a newer one.

The migrations ship inside the package (foxbatch.migrations) and are located with
importlib.resources, so a non-editable install can create a database from any folder.

Every command checks the schema first. That check reads alembic_version with SQLAlchemy alone
and compares it with SCHEMA_HEAD; Alembic itself (about 0.7 s to import) is loaded only when
the database is not at the head revision.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from foxbatch.errors import SchemaTooNewError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest migration in migrations/versions (a test checks that Alembic agrees).
SCHEMA_HEAD = "0005"
# Any constant works: it only has to be the same for every foxbatch process.
_PG_MIGRATION_LOCK = 0x66786274


@contextlib.contextmanager
def _alembic_config() -> Iterator[Config]:
    from alembic.config import Config

    resource = importlib.resources.files("foxbatch.migrations")
    with importlib.resources.as_file(resource) as path:
        config = Config()
        config.set_main_option("script_location", str(Path(path)))
        yield config


def head_revision() -> str:
    """The newest revision this version of foxbatch ships."""
    from alembic.script import ScriptDirectory

    with _alembic_config() as config:
        head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    """Every revision this version of foxbatch ships."""
    from alembic.script import ScriptDirectory

    with _alembic_config() as config:
        return {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        try:
            rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:  # no such table: an empty database
            rev = None
        conn.rollback()
    return rev


def upgrade(engine: Engine) -> str:
    """Bring the database to the head revision; safe when several processes do it at once."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with _alembic_config() as config, engine.begin() as conn:
        _lock_for_migration(conn)
        _refuse_newer(MigrationContext.configure(conn).get_current_revision(), engine)
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return head_revision()


def ensure_current(engine: Engine) -> None:
    """Upgrade an older database by itself; refuse one newer than this code (SchemaTooNewError)."""
    rev = current_revision(engine)
    if rev == SCHEMA_HEAD:
        return
    _refuse_newer(rev, engine)
    upgrade(engine)


def _refuse_newer(rev: str | None, engine: Engine) -> None:
    if rev is not None and rev not in known_revisions():
        where = engine.url.render_as_string(hide_password=True)
        raise SchemaTooNewError(
            f"database {where} is at schema revision {rev}, newer than this foxbatch "
            f"understands (newest known: {head_revision()}); upgrade foxbatch")


def _lock_for_migration(conn: Connection) -> None:
    # SQLite: the transaction already holds the write lock (BEGIN IMMEDIATE). PostgreSQL: an
    # advisory lock, so that two workers starting together do not both create the tables.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
