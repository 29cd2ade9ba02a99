"""Migrations produce exactly tables.metadata; older databases upgrade, newer ones are refused."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from foxbatch.errors import SchemaTooNewError
from foxbatch.store import open_store
from foxbatch.store.engine import make_engine
from foxbatch.store.migrate import current_revision, head_revision, upgrade
from foxbatch.store.tables import metadata


def test_upgrade_head_matches_metadata(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []


def test_empty_database_is_upgraded_on_open(db_url):
    repo = open_store(db_url)
    assert current_revision(repo.engine) == head_revision()
    repo.engine.dispose()


def test_upgrade_is_idempotent(db_url):
    engine = make_engine(db_url)
    assert upgrade(engine) == upgrade(engine) == head_revision()
    engine.dispose()


def test_newer_database_is_refused(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    with pytest.raises(SchemaTooNewError, match="newer than this foxbatch"):
        open_store(db_url)
    with pytest.raises(SchemaTooNewError):
        upgrade(engine)
    engine.dispose()


def test_sqlite_pragmas(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_schema_head_constant_is_alembics_head():
    from foxbatch.store.migrate import SCHEMA_HEAD

    assert head_revision() == SCHEMA_HEAD
