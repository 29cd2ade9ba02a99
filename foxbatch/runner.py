"""One worker process: submitter + poller + lease upkeep, until done or stopped.

`Runner.run()` drives three loops on one event loop: submitting due queued rows, polling due
pending tasks, and upkeep (rescue of expired leases, lease heartbeat, progress, the done check).
Every request holds a limiter permit; every outcome goes through the group-commit recorder.

Many runners may serve one store (scale-out on PostgreSQL). Each one records itself in the
`workers` table and heartbeats there and on its claims every `heartbeat_every`; each one rescues
the expired claims of dead workers every `rescue_every`; with `rate_key` set, all runners of one
API key draw their requests/s from one budget in the store (foxbatch.budget).

Stopping (`stop()`, or a 401/402 from FoxAPI): no new claims; requests in flight get `grace`
seconds to finish and be recorded; what is still running then is cancelled and recorded as in
doubt (submits) or due again (polls); the recorder commits; nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from foxbatch.budget import StoreTokenSource
from foxbatch.client import FoxClient
from foxbatch.errors import FatalApiError
from foxbatch.models import ACTIVE_STATUSES, IN_DOUBT_HELD_CODE, OnDoubt
from foxbatch.poller import Poller
from foxbatch.ratelimit import Limiter
from foxbatch.recorder import Recorder, StoreThread, wait_event
from foxbatch.schedule import PollPlanner
from foxbatch.store import Repository
from foxbatch.store.records import (
    Fail,
    Outcome,
    PollClaim,
    PollLater,
    Requeue,
    SubmitClaim,
    TaskCreated,
)
from foxbatch.submitter import EngineOptions, Submitter

log = logging.getLogger(__name__)

MAX_IDLE = 1.0
SUBMIT_HORIZON = 10.0
DONE_CHECK_EVERY = 0.1


def new_owner_id() -> str:
    """A worker id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def is_dead_local_owner(owner: str) -> bool:
    """True for the id of a worker that ran on this machine in a process that no longer
    exists. Conservative: another machine's worker, or a pid now used again, counts as alive."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Progress:
    """A snapshot for the progress display."""

    counts: dict[str, int]
    in_flight: int
    rate: float
    eta_seconds: float | None
    elapsed: float
    paused_for: float

    @property
    def total(self) -> int:
        """All rows of the jobs served."""
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        """Rows in a terminal state."""
        return self.total - sum(self.counts[s] for s in ACTIVE_STATUSES)


@dataclass
class RunSummary:
    """How a run ended."""

    reason: str  # "done", "stopped" or "fatal"
    counts: dict[str, int]
    submits: int = 0
    polls: int = 0
    in_doubt: int = 0
    commits: int = 0
    fatal: FatalApiError | None = None
    elapsed: float = 0.0


@dataclass
class _InFlight:
    tasks: dict[asyncio.Task[None], SubmitClaim | PollClaim] = field(default_factory=dict)


class Runner:
    """Submits and polls the given jobs' rows until done (or stopped)."""

    def __init__(self, repo: Repository, client: FoxClient, options: EngineOptions, *,
                 job_ids: Sequence[int] | None, submit: bool = True, poll: bool = True,
                 owner: str | None = None, grace: float = 5.0, progress_every: float = 2.0,
                 on_progress: Callable[[Progress], None] | None = None,
                 planner: PollPlanner | None = None):
        self.owner = owner or new_owner_id()
        self.options = options
        self.job_ids = list(job_ids) if job_ids is not None else None
        self._do_submit, self._do_poll = submit, poll
        self._grace = grace
        self._progress_every = progress_every
        self._on_progress = on_progress
        self._db = StoreThread(repo)
        shared = (StoreTokenSource(self._db, options.rate_key, options.rps)
                  if options.rate_key and options.rps else None)
        self._limiter = Limiter(options.concurrency, options.rps, tokens=shared)
        self._planner = planner or PollPlanner()
        self._work = asyncio.Event()
        self._stop = asyncio.Event()
        self._settled = asyncio.Event()
        self._recorder = Recorder(self._db, on_applied=self._after_commit)
        common = (self._db, client, self._limiter, self._recorder, self._planner, options)
        self._submitter = Submitter(*common, owner=self.owner, job_ids=self.job_ids)
        self._poller = Poller(*common, owner=self.owner, job_ids=self.job_ids)
        self._in_flight = _InFlight()
        self._fatal: FatalApiError | None = None
        self._started = time.monotonic()
        self._submits = self._polls = 0
        self._finished_seen: list[tuple[float, int]] = []

    def stop(self) -> None:
        """Ask the run to stop: no new claims, in-flight work finishes or is released."""
        self._stop.set()
        self._work.set()

    async def run(self, *, until_done: bool = True) -> RunSummary:
        """Work until the jobs have nothing left (with `until_done`) or `stop()` is called."""
        self._started = time.monotonic()
        await self._register()
        await self._expire_claims_of_dead_local_workers()
        await self._seed_planner()
        recorder = asyncio.create_task(self._recorder.run(), name="the recorder")
        loops = [asyncio.create_task(coro, name=name) for name, coro in (
            ("the submit loop", self._submit_loop()), ("the poll loop", self._poll_loop()),
            ("the upkeep loop", self._upkeep_loop(until_done)))]
        for loop_task in (*loops, recorder):
            loop_task.add_done_callback(self._loop_done)
        try:
            await self._stop.wait()
        finally:
            await self._shut_down(loops, recorder)
            await self._db.call(self._db.repo.stop_worker, self.owner)
        return await self._summary()

    async def _register(self) -> None:
        await self._db.call(self._db.repo.register_worker, self.owner,
                            host=socket.gethostname(), pid=os.getpid(), job_ids=self.job_ids,
                            lease_seconds=self.options.lease_seconds)

    async def _expire_claims_of_dead_local_workers(self) -> None:
        """A worker of this machine that is gone (kill -9, a crash) cannot renew its claims:
        end them now instead of waiting out their leases, so a re-run resumes at once."""
        owners = await self._db.call(self._db.repo.lease_owners, self.job_ids)
        dead = [owner for owner in owners if is_dead_local_owner(owner)]
        if dead:
            expired = await self._db.call(self._db.repo.expire_claims_of, dead)
            log.info("%d claim(s) of %d stopped worker(s) on this machine taken back", expired,
                     len(dead))

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        """A loop (or the recorder) that fails, e.g. because the database went away, stops the
        whole run: a worker that can no longer heartbeat or record must not go on claiming."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("internal error in %s; stopping", task.get_name(),
                  exc_info=(type(exc), exc, exc.__traceback__))
        self.stop()

    # -- loops ------------------------------------------------------------------------------

    async def _submit_loop(self) -> None:
        if not self._do_submit:
            return
        while not self._stop.is_set():
            claims = await self._submitter.claim()
            for claim in claims:
                self._submits += 1
                self._spawn(self._submit_one(claim), claim)
            if not claims:
                await self._idle(("queued",))

    async def _poll_loop(self) -> None:
        if not self._do_poll:
            return
        while not self._stop.is_set():
            claims = await self._poller.claim()
            for claim in claims:
                self._polls += 1
                self._spawn(self._poll_one(claim), claim)
            if not claims:
                await self._idle(("pending",))

    async def _upkeep_loop(self, until_done: bool) -> None:
        last_rescue = last_heartbeat = last_progress = 0.0
        while not self._stop.is_set():
            # Cleared before the checks: a commit that settles everything while they wait
            # for the database wakes the next round at once.
            self._settled.clear()
            now = time.monotonic()
            if now - last_rescue >= self.options.rescue_every:
                last_rescue = now
                await self._rescue_expired()
            if now - last_heartbeat >= self.options.heartbeat_every:
                last_heartbeat = now
                await self._heartbeat()
            if self._on_progress and now - last_progress >= self._progress_every:
                last_progress = now
                self._on_progress(await self.progress())
            if until_done and await self._is_done():
                self.stop()
                return
            await wait_event(self._settled, DONE_CHECK_EVERY)

    # -- one request ------------------------------------------------------------------------

    async def _submit_one(self, claim: SubmitClaim) -> None:
        try:
            await self._submitter.submit(claim)
        except asyncio.CancelledError:
            self._recorder.add(self._cancelled_submit(claim))
            raise

    async def _poll_one(self, claim: PollClaim) -> None:
        try:
            await self._poller.poll(claim)
        except asyncio.CancelledError:
            self._recorder.add(PollLater(claim.item_id, claim.lease_token, time.time()))
            raise

    def _cancelled_submit(self, claim: SubmitClaim) -> Outcome:
        """A submit cut off by shutdown may have reached FoxAPI: it is in doubt."""
        self._submitter.in_doubt += 1
        message = "stopped while the submit was in flight"
        if self.options.on_doubt == OnDoubt.HOLD:
            return Fail(claim.item_id, claim.lease_token, "submitting", claim.attempt,
                        "in_doubt", IN_DOUBT_HELD_CODE, message, in_doubt=True)
        return Requeue(claim.item_id, claim.lease_token, "submitting", claim.attempt,
                       "in_doubt", time.time(), "in_doubt", message, in_doubt=True)

    def _spawn(self, coro: Awaitable[None], claim: SubmitClaim | PollClaim) -> None:
        task = asyncio.ensure_future(coro)
        self._in_flight.tasks[task] = claim
        task.add_done_callback(self._request_done)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.tasks.pop(task, None)
        self._work.set()
        if not self._in_flight.tasks:
            self._recorder.commit_soon()
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, FatalApiError):
            if self._fatal is None:
                self._fatal = exc
                log.error("stopping: %s", exc)
            self.stop()
        elif exc is not None:
            log.error("internal error while handling a request; stopping",
                      exc_info=(type(exc), exc, exc.__traceback__))
            self.stop()

    # -- upkeep -----------------------------------------------------------------------------

    async def _idle(self, statuses: tuple[str, ...]) -> None:
        """Sleep until the next row of `statuses` falls due, new work appears, or MAX_IDLE."""
        self._work.clear()
        due = await self._db.call(self._db.repo.next_due_at, self.job_ids, statuses=statuses)
        timeout = MAX_IDLE if due is None else min(MAX_IDLE, max(0.0, due - time.time()))
        if timeout > 0:
            await wait_event(self._work, timeout)

    def _after_commit(self, batch: list[Outcome]) -> None:
        # New due work (a first poll, a retry, a poll moved earlier): the idle loops look again.
        if any(isinstance(o, TaskCreated | Requeue | PollLater) for o in batch):
            self._work.set()
        # Nothing in flight and all recorded: the job may be done; the upkeep loop looks now.
        if not self._in_flight.tasks and not self._recorder.pending:
            self._settled.set()

    async def _rescue_expired(self) -> None:
        rescued = await self._db.call(self._db.repo.rescue_expired,
                                      on_doubt=self.options.on_doubt, job_ids=self.job_ids)
        if rescued:
            log.warning("%d row(s) whose worker died mid-submit are in doubt: %s", rescued,
                        "resubmitting" if self.options.on_doubt == OnDoubt.RESUBMIT else
                        f"held as failed ({IN_DOUBT_HELD_CODE})")
            self._work.set()

    async def _heartbeat(self) -> None:
        """Tell the store this worker lives, and extend the leases of its work in flight."""
        await self._db.call(self._db.repo.touch_worker, self.owner)
        claims = list(self._in_flight.tasks.values())
        if claims:
            await self._db.call(self._db.repo.renew_leases, self.owner, claims,
                                lease_seconds=self.options.claim_lease)

    async def _is_done(self) -> bool:
        if self._in_flight.tasks or self._recorder.pending:
            return False
        if self._do_poll:
            return not await self._db.call(self._db.repo.has_active_rows, self.job_ids)
        due = await self._db.call(self._db.repo.next_due_at, self.job_ids, statuses=("queued",))
        return due is None or due > time.time() + SUBMIT_HORIZON

    async def _seed_planner(self) -> None:
        # Task durations are a property of the model, not of the job: last night's job
        # teaches tonight's when to take its first look.
        recent = await self._db.call(self._db.repo.recent_durations, None)
        for model, durations in recent.items():
            self._planner.seed(model, durations)

    async def progress(self) -> Progress:
        """Counts, rate and ETA for the jobs served."""
        counts = await self._counts()
        now = time.monotonic()
        finished = sum(counts.values()) - sum(counts[s] for s in ACTIVE_STATUSES)
        self._finished_seen = [p for p in self._finished_seen if now - p[0] <= 30.0]
        self._finished_seen.append((now, finished))
        first_t, first_n = self._finished_seen[0]
        rate = (finished - first_n) / (now - first_t) if now > first_t else 0.0
        active = sum(counts[s] for s in ACTIVE_STATUSES)
        return Progress(counts=counts, in_flight=len(self._in_flight.tasks), rate=rate,
                        eta_seconds=active / rate if rate > 0 else None,
                        elapsed=now - self._started, paused_for=self._limiter.paused_for)

    async def _counts(self) -> dict[str, int]:
        return await self._db.call(self._db.repo.counts_of_jobs, self.job_ids)

    # -- shutdown ---------------------------------------------------------------------------

    async def _shut_down(self, loops: list[asyncio.Task[None]],
                         recorder: asyncio.Task[None]) -> None:
        for loop_task in loops:
            loop_task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        pending = list(self._in_flight.tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)

    async def _summary(self) -> RunSummary:
        reason = "fatal" if self._fatal else ("stopped" if not await self._is_done() else "done")
        summary = RunSummary(reason=reason, counts=await self._counts(), submits=self._submits,
                             polls=self._polls, in_doubt=self._submitter.in_doubt,
                             commits=self._recorder.commits, fatal=self._fatal,
                             elapsed=time.monotonic() - self._started)
        self._db.close()
        return summary
