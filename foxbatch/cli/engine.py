"""The engine on the command line: shared options, driving a Runner, progress, exit codes,
and `foxbatch poll` (the daemon)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from foxbatch import worker
from foxbatch.cli.common import (
    EXIT_FATAL_API,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    App,
    duration_text,
    pass_app,
)
from foxbatch.models import OnDoubt
from foxbatch.runner import Progress, RunSummary
from foxbatch.submitter import EngineOptions
from foxbatch.worker import Endpoint, endpoint, open_runner

log = logging.getLogger("foxbatch.cli")

SIM_NOTICE = f"foxbatch: --sim: {worker.SIM_NOTICE}"
LOG_PROGRESS_EVERY = 30.0
TTY_PROGRESS_EVERY = 1.0  # each refresh counts the job's rows by state: keep it off the hot path
GC_YOUNG_THRESHOLD = 7_000  # allocations between two collections of young objects (default 700)


def engine_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that talks to FoxAPI shares."""
    options = [
        click.option("--concurrency", type=click.IntRange(1, 4096), default=64,
                     show_default=True, help="Most requests in flight at once."),
        click.option("--rps", type=click.FloatRange(min=0.1), default=None,
                     help="Most requests per second (submits and polls together), shared by "
                     "every worker using the same API key and database."),
        click.option("--max-attempts", type=click.IntRange(1, 100), default=3,
                     show_default=True, help="Submissions per row before it ends failed."),
        click.option("--on-doubt", type=click.Choice([d.value for d in OnDoubt]),
                     default=OnDoubt.RESUBMIT.value, show_default=True,
                     help="A submit that may have created a task we never heard of: submit "
                          "again (at-least-once) or hold the row as failed (in_doubt_held) "
                          "for a human."),
        click.option("--lease-seconds", type=click.FloatRange(min=2), default=30.0,
                     show_default=True, help="A dead worker's claimed rows come back within "
                     "this many seconds (live workers renew their claims by heartbeat)."),
        click.option("--retry-base", type=click.FloatRange(min=0.01), default=2.0,
                     show_default=True, help="Seconds before the first retry of a failed row "
                     "(1-2x this, doubling with each attempt, at most 5 minutes)."),
        click.option("--sim", is_flag=True, help="Use the bundled FoxAPI simulator "
                     "in-process instead of the network (no API key needed)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _engine_options_from(kwargs: dict[str, Any]) -> EngineOptions:
    return EngineOptions(concurrency=kwargs["concurrency"], rps=kwargs["rps"],
                         max_attempts=kwargs["max_attempts"], on_doubt=OnDoubt(kwargs["on_doubt"]),
                         lease_seconds=kwargs["lease_seconds"], retry_base=kwargs["retry_base"])


@click.command("poll")
@click.option("--job", "jobs", multiple=True, metavar="NAME",
              help="Serve only this job (repeatable); all jobs by default.")
@click.option("--until-done", is_flag=True, help="Exit when the jobs have nothing left to do.")
@engine_options
@pass_app
def poll_command(app: App, jobs: tuple[str, ...], until_done: bool, **kwargs: Any) -> None:
    """The daemon: submit queued rows, poll pending tasks, record results.

    Runs until SIGINT/SIGTERM (a clean stop) or, with --until-done, until idle.
    """
    job_ids = [app.repo.get_job(name).id for name in jobs] if jobs else None
    summary = drive(app, job_ids, kwargs, submit=True, poll=True, until_done=until_done)
    exit_for(summary, finished=until_done)


def drive(app: App, job_ids: list[int] | None, kwargs: dict[str, Any], *, submit: bool,
          poll: bool, until_done: bool = True) -> RunSummary:
    """Run the engine over `job_ids` (every job when None) with the engine flags in `kwargs`,
    showing progress; SIGINT and SIGTERM stop it cleanly."""
    options = _engine_options_from(kwargs)
    target = endpoint(app.settings, sim=kwargs["sim"])
    if kwargs["sim"]:
        click.echo(SIM_NOTICE, err=True)
    _tune_garbage_collection()
    with asyncio.Runner(loop_factory=_fast_event_loop()) as runner:
        return runner.run(_run_engine(app, job_ids, options, target, submit=submit, poll=poll,
                                      until_done=until_done))


def _tune_garbage_collection() -> None:
    """Keep the cyclic garbage collector off the engine's hot path (what is left of this
    process is the engine, and for `run -o` an export). Every request allocates a few dozen
    container objects; with Python's defaults the collector ran ~500 times during a
    3,000-task run and, walking the start-up's long-lived objects (SQLAlchemy, click, the
    store) again and again, took 15% of the engine's time. Those objects are moved out of
    its sight (gc.freeze) and young objects are collected every GC_YOUNG_THRESHOLD
    allocations instead of 700: 5% then."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _fast_event_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (not on Windows): the engine is CPU-bound on its HTTP
    client, and uvloop's loop costs less per request."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _run_engine(app: App, job_ids: list[int] | None, options: EngineOptions,
                      target: Endpoint, *, submit: bool, poll: bool,
                      until_done: bool) -> RunSummary:
    display = ProgressDisplay()
    async with open_runner(app.repo, target, options, job_ids=job_ids, submit=submit,
                           poll=poll, on_progress=display.show,
                           progress_every=display.every) as runner:
        with _stop_on_signals(runner.stop):
            summary = await runner.run(until_done=until_done)
    display.close()
    return summary


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def exit_for(summary: RunSummary, *, finished: bool) -> None:
    ctx = click.get_current_context()
    if summary.fatal is not None:
        hint = summary.fatal.hint
        click.echo(f"foxbatch: stopped: {summary.fatal} ({hint})", err=True)
        ctx.exit(EXIT_FATAL_API)
    if summary.reason == "stopped":
        click.echo("foxbatch: stopped; run the same command again to resume", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    counts = summary.counts
    click.echo(_final_line(summary), err=True)
    if finished and (counts["failed"] or counts["invalid"]):
        ctx.exit(EXIT_ROWS_FAILED)
    ctx.exit(EXIT_OK)


def _final_line(summary: RunSummary) -> str:
    c = summary.counts
    return (f"succeeded {c['succeeded']}, failed {c['failed']}, invalid {c['invalid']}, "
            f"cancelled {c['cancelled']}, still active "
            f"{c['queued'] + c['submitting'] + c['pending']} "
            f"({summary.elapsed:.2f}s; in-doubt resubmits this run: {summary.in_doubt})")


class ProgressDisplay:
    """A live line on a terminal; a log record every 30 s otherwise (cron)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.every = TTY_PROGRESS_EVERY if self.tty else LOG_PROGRESS_EVERY
        self._shown = False

    def show(self, progress: Progress) -> None:
        """Render one progress snapshot."""
        line = format_progress(progress)
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
            self._shown = True
        else:
            log.info(line)

    def close(self) -> None:
        """End the live line."""
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def format_progress(p: Progress) -> str:
    """One line: done / failed / in flight, rate, ETA."""
    c = p.counts
    done = c["succeeded"]
    pct = 100.0 * p.finished / p.total if p.total else 100.0
    eta = duration_text(p.eta_seconds) if p.eta_seconds is not None else "?"
    paused = f" | paused {p.paused_for:.0f}s (429)" if p.paused_for > 0.5 else ""
    return (f"{p.finished}/{p.total} finished ({pct:.0f}%) | succeeded {done} failed "
            f"{c['failed']} invalid {c['invalid']} | in flight {p.in_flight} | "
            f"{p.rate:.1f} rows/s | ETA {eta}{paused}")
