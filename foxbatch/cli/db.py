"""`foxbatch db upgrade | current`: schema management."""

from __future__ import annotations

import click

from foxbatch.cli.common import App, pass_app
from foxbatch.store.engine import make_engine
from foxbatch.store.migrate import current_revision, head_revision, upgrade


@click.group("db")
def db_group() -> None:
    """Create or upgrade the task store's schema."""


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create the database or upgrade it to this version's schema."""
    engine = make_engine(app.settings.db_url)
    try:
        rev = upgrade(engine)
    finally:
        engine.dispose()
    click.echo(f"database at revision {rev} (head)")


@db_group.command("current")
@pass_app
def db_current(app: App) -> None:
    """Show the database's schema revision and whether it is up to date."""
    engine = make_engine(app.settings.db_url)
    try:
        rev = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    if rev is None:
        click.echo(f"empty database (head is {head}; `foxbatch db upgrade` creates it)")
    elif rev == head:
        click.echo(f"{rev} (head)")
    else:
        click.echo(f"{rev} (head is {head})")
