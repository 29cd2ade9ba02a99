"""What every command shares: the application context, error handling and exit codes."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Sequence
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

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        """Parse the global options; a usage error exits 1 (design.md), not click's 2."""
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            exc.exit_code = EXIT_ERROR
            raise

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; errors become one line on stderr (a traceback only with -v), and
        usage errors exit 1 (exit code 2 means rows failed)."""
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.exit_code = EXIT_ERROR
            raise
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


def duration_text(seconds: float) -> str:
    """A duration for people: 42s, 3m07s, 2h15m, 3d04h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def table_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under a header in left-aligned columns, two spaces apart."""
    lines = [list(header), *map(list, rows)]
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in lines)


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
