"""`foxbatch submit` and `foxbatch run`: ingest a file, then drive the engine over its job."""

from __future__ import annotations

from typing import Any

import click

from foxbatch.cli.common import App, pass_app
from foxbatch.cli.engine import drive, engine_options, exit_for
from foxbatch.cli.ingest import echo_ingest_report, ingest_options, ingest_options_from
from foxbatch.export import ExportOptions, check_target, export_job
from foxbatch.ingest import ingest, plan_ingest


@click.command("submit")
@click.argument("input_path", metavar="INPUT")
@ingest_options
@engine_options
@click.option("--dry-run", is_flag=True, help="Submit nothing: print what would be sent.")
@pass_app
def submit_command(app: App, input_path: str, dry_run: bool, **kwargs: Any) -> None:
    """Ingest INPUT (idempotent) and submit its queued rows, then return.

    `foxbatch poll` finishes the job (polls the tasks, retries what failed).
    """
    if dry_run:
        _print_dry_run(app, input_path, kwargs)
        return
    report = ingest(app.repo, input_path, ingest_options_from(kwargs))
    echo_ingest_report(report, err=True)
    summary = drive(app, [report.job.id], kwargs, submit=True, poll=False)
    click.echo(f"submitted {summary.submits} row(s); in doubt {summary.in_doubt}; "
               "run `foxbatch poll --until-done` to collect the results", err=True)
    exit_for(summary, finished=False)


@click.command("run")
@click.argument("input_path", metavar="INPUT")
@ingest_options
@engine_options
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Export the finished job here (.jsonl, .csv or .parquet).")
@pass_app
def run_command(app: App, input_path: str, output: str | None, **kwargs: Any) -> None:
    """Ingest INPUT, submit and poll until the job is finished, then export to -o.

    Run the same command again after any interruption: it resumes where it stopped.
    """
    if output:
        check_target(output)
    report = ingest(app.repo, input_path, ingest_options_from(kwargs))
    echo_ingest_report(report, err=True)
    summary = drive(app, [report.job.id], kwargs, submit=True, poll=True)
    if output and summary.reason == "done":
        rows = export_job(app.repo, report.job, output, ExportOptions())
        click.echo(f"exported {rows} row(s) to {output}", err=True)
    exit_for(summary, finished=True)


def _print_dry_run(app: App, input_path: str, kwargs: dict[str, Any]) -> None:
    plan = plan_ingest(app.repo, input_path, ingest_options_from(kwargs))
    click.echo(f"dry run for job {plan.job_name!r}: nothing stored, nothing sent")
    for label, value in (
            ("rows read", plan.rows_read), ("new rows", plan.new),
            ("already finished (not sent again)", plan.already_done),
            ("stored, not finished yet", plan.waiting), ("invalid", plan.invalid),
            ("requests it would send", plan.requests),
            ("estimated prompt tokens", plan.prompt_tokens)):
        click.echo(f"  {label + ':':<36}{value:>12,}")
