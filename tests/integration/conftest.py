"""Fixtures for command-line tests."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from foxbatch.cli import main


@pytest.fixture
def cli(sqlite_url):
    """Run foxbatch on the test's SQLite database; returns click's Result (stdout and stderr
    apart in .stdout and .stderr)."""
    def invoke(*args: str):
        return CliRunner().invoke(main, ["--db", sqlite_url, *args])
    return invoke
