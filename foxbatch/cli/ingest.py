"""`foxbatch ingest`: load a prompt file into the store, send nothing.

Also the pieces `submit` and `run` share: the `ingest_options` decorator, `ingest_options_from`
to turn those flags into IngestOptions, and `echo_ingest_report` for the summary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

import click

from foxbatch.cli.common import EXIT_ROWS_FAILED, App, pass_app
from foxbatch.ingest import IngestOptions, IngestReport, ingest
from foxbatch.inputs import FORMATS

F = TypeVar("F", bound=Callable[..., Any])

SHOWN_CHANGED_KEYS = 5
# --template "Review: {text}\nLabel:" means a newline: a shell passes the backslash through.
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}

_INGEST_OPTIONS = [
    click.option("--job", metavar="NAME", help="Job name [default: the file's stem]."),
    click.option("--format", type=click.Choice(FORMATS), default=None,
                 help="Input format [default: from the extension; - is JSONL]."),
    click.option("--encoding", metavar="ENC",
                 help="Encoding of a JSONL or CSV file [default: UTF-8, with or without BOM]."),
    click.option("--model", metavar="M",
                 help="Model for rows without a model field (needed unless every row has one)."),
    click.option("--system", metavar="TEXT",
                 help="System prompt for rows without a system_prompt (or system) field."),
    click.option("--max-tokens", type=int, metavar="N",
                 help="max_tokens for rows without their own (claude-* models need it)."),
    click.option("--temperature", type=float, metavar="T",
                 help="Temperature in [0, 2] for rows without their own."),
    click.option("--reasoning", is_flag=True, default=None,
                 help="Ask for reasoning tokens (a row's reasoning field overrides this)."),
    click.option("--prompt-field", metavar="F",
                 help="The field holding the prompt [default: prompt]."),
    click.option("--template", metavar="TEXT",
                 help='Build the prompt from the row\'s fields, str.format style, e.g. '
                      '"Review: {text}\\nLabel:" (\\n is a newline, \\t a tab).'),
    click.option("--id-field", metavar="F",
                 help="The field holding each row's key [default: id or custom_id, else the "
                      "line/row number]."),
    click.option("--strict", is_flag=True,
                 help="Refuse the whole file at its first bad row and store nothing."),
    click.option("--replace", is_flag=True,
                 help="Re-queue rows whose content changed since they were ingested."),
]


def ingest_options(command: F) -> F:
    """Add the ingest flags (everything but INPUT) to a click command."""
    for option in reversed(_INGEST_OPTIONS):
        command = option(command)
    return command


def ingest_options_from(kwargs: Mapping[str, Any]) -> IngestOptions:
    """IngestOptions from the values of the `ingest_options` flags; other keys are ignored."""
    values = {field.name: kwargs[field.name] for field in fields(IngestOptions)}
    values["template"] = _unescaped(values["template"])
    values["reasoning"] = values["reasoning"] or None
    return IngestOptions(**values)


def echo_ingest_report(report: IngestReport, *, err: bool = False) -> None:
    """Print the short summary of an ingest: rows read, new, already present, changed, invalid
    with the first few reasons and their lines."""
    lines = [f"job {report.job.name}: {report.rows_read:,} rows read: {report.inserted:,} new, "
             f"{report.present:,} already present, {report.invalid:,} invalid"]
    if report.changed_count:
        shown = ", ".join(report.changed[:SHOWN_CHANGED_KEYS])
        more = ", ..." if report.changed_count > SHOWN_CHANGED_KEYS else ""
        what = (f"{report.replaced:,} re-queued" if report.replaced else
                "kept as they were (--replace re-queues them)")
        lines.append(f"changed since stored: {report.changed_count:,} ({shown}{more}); {what}")
    if report.invalid:
        lines.append(f"invalid rows (first {len(report.invalid_reasons)} of {report.invalid:,}):")
        lines.extend(f"  {reason}" for reason in report.invalid_reasons)
    click.echo("\n".join(lines), err=err)


@click.command("ingest")
@click.argument("input_path", metavar="INPUT")
@ingest_options
@pass_app
def ingest_command(app: App, input_path: str, **kwargs: Any) -> None:
    """Load INPUT (.jsonl, .csv, .parquet; - reads JSONL from standard input) into the store.

    Nothing is sent. Ingesting the same file again adds only new rows. Rows that cannot become
    a request are stored as invalid, with their line and reason; the exit code is then 2.
    """
    report = ingest(app.repo, input_path, ingest_options_from(kwargs))
    echo_ingest_report(report)
    if report.invalid:
        click.get_current_context().exit(EXIT_ROWS_FAILED)


def _unescaped(template: str | None) -> str | None:
    if template is None:
        return None
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], template)
