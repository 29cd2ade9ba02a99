"""`foxbatch workers`: the worker processes serving this store, their claims and heartbeats."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from foxbatch.cli.common import App, duration_text, pass_app, table_text
from foxbatch.store.records import Worker

# Stopped workers are listed for this long after they stop (all of them with --all).
RECENTLY_STOPPED = 3600.0
COLUMNS = ("WORKER", "STATE", "HOST", "PID", "STARTED", "HEARTBEAT", "SUBMITTING", "POLLING",
           "JOBS")


@click.command("workers")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
@click.option("--all", "show_all", is_flag=True,
              help="Also workers that stopped more than an hour ago.")
@pass_app
def workers_command(app: App, as_json: bool, show_all: bool) -> None:
    """The workers serving this store: live, dead (no heartbeat for their lease: their rows are
    being taken over) or stopped; the rows each one holds (submitting, polling) and its last
    heartbeat."""
    now = time.time()
    shown = [w for w in app.repo.list_workers() if show_all or _worth_showing(w, now)]
    job_names = {job.id: job.name for job in app.repo.list_jobs()}
    if as_json:
        click.echo(json.dumps([_as_dict(w, now, job_names) for w in shown], indent=2))
    elif not shown:
        click.echo("no workers on record" + ("" if show_all else " (--all shows old ones)"))
    else:
        click.echo(table_text(COLUMNS, [_as_cells(w, now, job_names) for w in shown]))


def _worth_showing(worker: Worker, now: float) -> bool:
    return worker.stopped_at is None or now - worker.stopped_at <= RECENTLY_STOPPED


def _as_dict(worker: Worker, now: float, job_names: dict[int, str]) -> dict[str, Any]:
    return {"id": worker.id, "state": worker.state(now), "host": worker.host, "pid": worker.pid,
            "started_at": worker.started_at, "heartbeat_at": worker.heartbeat_at,
            "heartbeat_age": round(now - worker.heartbeat_at, 3),
            "stopped_at": worker.stopped_at, "lease_seconds": worker.lease_seconds,
            "jobs": _jobs(worker, job_names),
            "held": {"submitting": worker.submitting, "polling": worker.polling}}


def _as_cells(worker: Worker, now: float, job_names: dict[int, str]) -> list[str]:
    jobs = _jobs(worker, job_names)
    return [worker.id, worker.state(now), worker.host, str(worker.pid),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(worker.started_at)),
            f"{duration_text(now - worker.heartbeat_at)} ago", str(worker.submitting),
            str(worker.polling), "all" if jobs is None else ",".join(jobs)]


def _jobs(worker: Worker, job_names: dict[int, str]) -> list[str] | None:
    if worker.job_ids is None:
        return None
    return [job_names.get(job_id, f"#{job_id}") for job_id in worker.job_ids]
