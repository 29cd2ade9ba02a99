"""Shared fixtures: real SQLite files and throwaway PostgreSQL databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from foxbatch.store import Repository, open_store

PG_ADMIN = os.environ.get("FOXBATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_answers() -> str | None:
    """None if PostgreSQL answers, else the reason it does not."""
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at {PG_ADMIN} does not answer: {str(exc).splitlines()[0]}"


PG_UNAVAILABLE = _pg_answers()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A URL for a new SQLite file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database on 127.0.0.1:5432, dropped afterwards."""
    if PG_UNAVAILABLE:
        pytest.skip(PG_UNAVAILABLE)
    name = f"foxbatch_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """The same test on a real SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def repo(db_url) -> Iterator[Repository]:
    """A migrated store on each engine."""
    repository = open_store(db_url)
    yield repository
    repository.engine.dispose()
