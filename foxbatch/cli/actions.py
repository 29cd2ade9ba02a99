"""`foxbatch retry` and `foxbatch cancel`: an operator's changes to a job's finished or waiting
rows."""

from __future__ import annotations

import click

from foxbatch.cli.common import EXIT_ROWS_FAILED, App, pass_app
from foxbatch.retry import RetrySelection, parse_changes, retry_job
from foxbatch.store.repository import IN_FLIGHT


@click.command("retry")
@click.argument("job_name", metavar="JOB")
@click.option("--failed", is_flag=True, help="Retry failed rows (the default).")
@click.option("--invalid", is_flag=True,
              help="Retry invalid rows: only those a --set change makes valid.")
@click.option("--cancelled", is_flag=True, help="Retry cancelled rows.")
@click.option("--code", "codes", multiple=True, metavar="CODE",
              help="Only rows with this error code (repeatable); e.g. in_doubt_held releases "
                   "rows held by --on-doubt hold.")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
              help="Change a request field of the retried rows (repeatable): model, "
                   "max_tokens, temperature, system_prompt or reasoning; FIELD=null removes it.")
@pass_app
def retry_command(app: App, job_name: str, failed: bool, invalid: bool, cancelled: bool,
                  codes: tuple[str, ...], settings: tuple[str, ...]) -> None:
    """Put a job's finished rows back in the queue.

    JOB's selected rows get a renewed attempt budget (their past attempts stay on record);
    `foxbatch poll` or `foxbatch run` then processes them.

    Exit code 2 when some selected rows could not be re-queued (the reasons are printed).
    """
    changes = parse_changes(settings)
    job = app.repo.get_job(job_name)
    selection = RetrySelection.from_flags(failed=failed, invalid=invalid, cancelled=cancelled,
                                          codes=codes)
    report = retry_job(app.repo, job, selection, changes)
    click.echo(f"job {job.name}: re-queued {report.requeued:,} row(s)"
               + ("; run `foxbatch poll --until-done` to process them" if report.requeued
                  else ""))
    if report.refused:
        click.echo(f"not re-queued: {report.refused:,} row(s) (first {len(report.reasons)}):")
        for reason in report.reasons:
            click.echo(f"  {reason}")
        click.get_current_context().exit(EXIT_ROWS_FAILED)


@click.command("cancel")
@click.argument("job_name", metavar="JOB")
@click.option("--discard", is_flag=True,
              help="Also cancel rows whose task is in flight and ignore their results "
                   "(FoxAPI cannot cancel a task: it still runs and is billed).")
@pass_app
def cancel_command(app: App, job_name: str, discard: bool) -> None:
    """Cancel a job's queued rows (--discard: also those in flight).

    JOB's queued rows are cancelled at once. Tasks already in flight finish and their results
    are recorded (a failed one is not retried: its row ends cancelled), unless --discard.
    `foxbatch retry JOB --cancelled` puts cancelled rows back.
    """
    job = app.repo.get_job(job_name)
    cancelled = app.repo.cancel_items(job.id, ("queued",))
    discarded = app.repo.cancel_items(job.id, IN_FLIGHT) if discard else 0
    click.echo(f"job {job.name}: cancelled {cancelled:,} queued row(s)")
    if discard:
        click.echo(f"discarded {discarded:,} row(s) in flight (their results will be ignored)")
        return
    in_flight = app.repo.request_cancel_in_flight(job.id)
    if in_flight:
        click.echo(f"{in_flight:,} row(s) in flight are left to finish: results are recorded, "
                   "failures are not retried (--discard ignores them)")
