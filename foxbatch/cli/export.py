"""`foxbatch export`: a job's results joined to its input rows, written to a file."""

from __future__ import annotations

import click

from foxbatch.cli.common import App, pass_app
from foxbatch.export import ExportOptions, export_job
from foxbatch.models import ALL_STATUSES


@click.command("export")
@click.argument("job_name", metavar="JOB")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The file to write: .jsonl, .csv or .parquet (replaced atomically).")
@click.option("--status", "statuses", multiple=True, type=click.Choice(ALL_STATUSES),
              help="Only rows in this state (repeatable) [default: every row].")
@click.option("--raw", is_flag=True, help="Add a `raw` column with the full ChatCompletion.")
@pass_app
def export_command(app: App, job_name: str, output: str, statuses: tuple[str, ...],
                   raw: bool) -> None:
    """Write a job's results, joined to its input rows, to a file.

    JOB's rows go to -o in input order: every input field, then output, status,
    finish_reason, token counts, model, task_id, attempts, error_code and error_message.

    A result column whose name an input field already has is written as result_<name>.
    """
    job = app.repo.get_job(job_name)
    rows = export_job(app.repo, job, output, ExportOptions(statuses=statuses, raw=raw))
    click.echo(f"exported {rows:,} row(s) of job {job.name} to {output}", err=True)
