"""`foxbatch status` (one job or all, once or watching) and `foxbatch jobs` (every job, one
line each)."""

from __future__ import annotations

import json
import sys
import time

import click

from foxbatch.cli.common import App, duration_text, pass_app, table_text
from foxbatch.models import ACTIVE_STATUSES, ALL_STATUSES
from foxbatch.report import JobReport, job_report

CLEAR_SCREEN = "\033[H\033[2J"
JOBS_COLUMNS = ("JOB", "ROWS", "SUCCEEDED", "FAILED", "INVALID", "CANCELLED", "ACTIVE", "AGE")


@click.command("status")
@click.argument("job_name", metavar="[JOB]", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="JSON: one object for JOB, a list for all jobs (one line per refresh "
                   "with --watch).")
@click.option("--watch", is_flag=True, help="Refresh until the job (every job) is finished.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="With --watch: stop after this many refreshes even if not finished.")
@pass_app
def status_command(app: App, job_name: str | None, as_json: bool, watch: bool,
                   interval: float, count: int | None) -> None:
    """Where a job (or every job) stands.

    Rows per state, attempts, in-doubt resubmissions, tokens, throughput, ETA and the most
    common errors with an example each, for JOB or, without it, every job."""
    shown = 0
    while True:
        reports = _reports(app, job_name)
        _show(reports, single=job_name is not None, as_json=as_json,
              clear=watch and not as_json and sys.stdout.isatty())
        shown += 1
        if not watch or all(r.done for r in reports) or (count and shown >= count):
            return
        time.sleep(interval)


@click.command("jobs")
@click.option("--json", "as_json", is_flag=True, help="One JSON list instead of a table.")
@pass_app
def jobs_command(app: App, as_json: bool) -> None:
    """Every job with its rows per state and its age, oldest first."""
    now = time.time()
    counts = app.repo.counts_by_job()
    none = dict.fromkeys(ALL_STATUSES, 0)
    rows = [(job, counts.get(job.id, none)) for job in app.repo.list_jobs()]
    if as_json:
        click.echo(json.dumps([{"job": job.name, "total": sum(c.values()), "counts": c,
                                "created_at": job.created_at,
                                "age_seconds": round(now - job.created_at, 1)}
                               for job, c in rows], indent=2))
    elif not rows:
        click.echo("no jobs in this database")
    else:
        click.echo(table_text(JOBS_COLUMNS, [_job_cells(job.name, c, now - job.created_at)
                                         for job, c in rows]))


def _reports(app: App, job_name: str | None) -> list[JobReport]:
    jobs = [app.repo.get_job(job_name)] if job_name is not None else app.repo.list_jobs()
    now = time.time()
    return [job_report(app.repo, job, now=now) for job in jobs]


def _show(reports: list[JobReport], *, single: bool, as_json: bool, clear: bool) -> None:
    if as_json:
        docs = [r.to_dict() for r in reports]
        click.echo(json.dumps(docs[0] if single else docs))
        return
    text = "\n\n".join(render(r) for r in reports) if reports else "no jobs in this database"
    click.echo((CLEAR_SCREEN if clear else "") + text)


def render(report: JobReport) -> str:
    """The text `status` prints for one job."""
    stats = report.stats
    state = "finished" if report.done else f"{report.active:,} row(s) left"
    lines = [f"job {report.job.name}: {report.total:,} rows, {state} "
             f"(created {duration_text(report.now - report.job.created_at)} ago)"]
    lines += [f"  {status:<12}{n:>12,}" for status, n in stats.counts.items()]
    lines.append(f"attempts {stats.attempts:,}; in-doubt resubmissions "
                 f"{stats.in_doubt_resubmits:,}")
    lines.append(f"tokens: prompt {stats.prompt_tokens:,}, completion "
                 f"{stats.completion_tokens:,}")
    lines.append(_pace(report))
    if stats.errors:
        lines.append("most common errors:")
        lines += [f"  {e.code:<24}{e.count:>8,}  e.g. {_one_line(e.example)}"
                  for e in stats.errors]
    return "\n".join(lines)


def _pace(report: JobReport) -> str:
    rate = report.rows_per_second
    if rate is None:
        return "throughput: nothing submitted yet"
    if report.done:
        return f"throughput: {rate:.2f} rows/s over the whole run"
    eta = report.eta_seconds
    return (f"throughput: {rate:.2f} rows/s (last 5 min); ETA "
            f"{duration_text(eta) if eta is not None else '?'}")


def _one_line(text: str | None, limit: int = 100) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _job_cells(name: str, counts: dict[str, int], age: float) -> list[str]:
    active = sum(counts[s] for s in ACTIVE_STATUSES)
    return [name, f"{sum(counts.values()):,}", *(f"{counts[s]:,}" for s in
            ("succeeded", "failed", "invalid", "cancelled")), f"{active:,}", duration_text(age)]
