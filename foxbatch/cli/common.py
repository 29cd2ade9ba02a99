"""What every command shares: the application context, error handling and exit codes."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from foxbatch.config import Settings, redact
from foxbatch.errors import FatalApiError, FoxbatchError
from foxbatch.store import Repository, open_store

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_ROWS_FAILED = 2
EXIT_FATAL_API = 3
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """Settings plus the store, opened (and migrated) on first use."""

    settings: Settings
    _repo: Repository | None = field(default=None, repr=False)

    @property
    def repo(self) -> Repository:
        """The task store; opening it upgrades an older schema and refuses a newer one."""
        if self._repo is None:
            self._repo = open_store(self.settings.db_url)
        return self._repo

    def close(self) -> None:
        """Release database connections."""
        if self._repo is not None:
            self._repo.engine.dispose()


pass_app = click.make_pass_decorator(App)


class FoxbatchGroup(click.Group):
    """A click group that turns foxbatch errors into one line and the design's exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; errors become one line on stderr (a traceback only with -v)."""
        try:
            return super().invoke(ctx)
        except FoxbatchError as exc:
            _report(ctx, exc)
            ctx.exit(EXIT_FATAL_API if isinstance(exc, FatalApiError) else EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("foxbatch: interrupted; run the same command again to resume", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def _report(ctx: click.Context, exc: FoxbatchError) -> None:
    app = ctx.find_object(App)
    secret = app.settings.api_key if app else None
    if app and app.settings.verbosity > 0:
        click.echo(redact("".join(traceback.format_exception(exc)), secret), err=True)
    message = redact(str(exc), secret)
    hint = getattr(exc, "hint", "")
    click.echo(f"foxbatch: error: {message}" + (f" ({hint})" if hint else ""), err=True)


def setup_logging(settings: Settings) -> None:
    """Log to stderr: one line per record, JSON with --log-json; -v for debug, -q for warnings."""
    level = logging.INFO - 10 * settings.verbosity
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if settings.log_json else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("foxbatch")
    root.handlers[:] = [handler]
    root.setLevel(max(logging.DEBUG, min(logging.ERROR, level)))
    root.propagate = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        doc = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        return json.dumps(doc, ensure_ascii=False)
