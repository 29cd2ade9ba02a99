"""`foxbatch status JOB`: how many rows of a job are in each state."""

from __future__ import annotations

import json

import click

from foxbatch.cli.common import App, pass_app


@click.command("status")
@click.argument("job_name", metavar="JOB")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_app
def status_command(app: App, job_name: str, as_json: bool) -> None:
    """Rows of JOB per state (every state, zeros included)."""
    job = app.repo.get_job(job_name)
    counts = app.repo.counts(job.id)
    total = sum(counts.values())
    if as_json:
        click.echo(json.dumps({"job": job.name, "total": total, "counts": counts}))
        return
    click.echo(f"job {job.name}: {total:,} rows")
    for status, count in counts.items():
        click.echo(f"  {status:<12}{count:>12,}")
