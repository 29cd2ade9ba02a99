"""Submitting: claim queued rows, POST them, turn each answer into an outcome.

A claim is committed before its POST is sent (crash rule 1) and is only taken when the limiter
has a permit for it, so a claimed row is sent at once rather than waiting while its lease runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from foxbatch.client import FoxClient
from foxbatch.crashpoints import crash_point
from foxbatch.errors import (
    ApiError,
    FatalApiError,
    InDoubtError,
    NotSentError,
    RateLimitedError,
    RequestRejectedError,
)
from foxbatch.models import IN_DOUBT_HELD_CODE, OnDoubt, retry_delay
from foxbatch.ratelimit import Limiter
from foxbatch.recorder import Recorder, StoreThread
from foxbatch.schedule import PollPlanner
from foxbatch.store.records import Fail, Outcome, Requeue, SubmitClaim, TaskCreated

log = logging.getLogger(__name__)
C = TypeVar("C")

CLAIM_LINGER = 0.005  # seconds to gather freed permits into one claim

NOT_SENT_DELAY = 2.0
# Shares of lease_seconds: a claim lasts CLAIM_LEASE_SHARE of it without a heartbeat and every
# worker looks for expired claims every RESCUE_SHARE of it, so a dead worker's rows are back
# within 0.9 x lease_seconds, leaving the rest for the rescue itself.
CLAIM_LEASE_SHARE = 0.8
RESCUE_SHARE = 0.1


@dataclass(frozen=True)
class EngineOptions:
    """How a worker submits and polls."""

    concurrency: int = 64
    rps: float | None = None
    max_attempts: int = 3
    on_doubt: OnDoubt = OnDoubt.RESUBMIT
    lease_seconds: float = 30.0  # a dead worker's claimed rows come back within this
    claim_batch: int = 256
    retry_base: float = 2.0  # first retry after 1-2 x this many seconds, doubling each time
    rate_key: str | None = None  # share the rps budget with every worker using this key

    @property
    def claim_lease(self) -> float:
        """Seconds a claim lasts unless the worker's heartbeat renews it."""
        return CLAIM_LEASE_SHARE * self.lease_seconds

    @property
    def rescue_every(self) -> float:
        """Seconds between two looks for expired claims (a dead worker's rows)."""
        return RESCUE_SHARE * self.lease_seconds

    @property
    def heartbeat_every(self) -> float:
        """Seconds between two heartbeats: three chances to renew a claim before it expires."""
        return self.claim_lease / 3

    def retry_at(self, now: float, budget_used: int) -> float:
        """When a row that used `budget_used` attempts may be submitted again."""
        return now + retry_delay(budget_used, base=self.retry_base)


class ClaimingStage:
    """What the submitter and the poller share: the worker's parts, and claiming rows only as
    fast as the limiter hands out permits for them."""

    def __init__(self, db: StoreThread, client: FoxClient, limiter: Limiter, recorder: Recorder,
                 planner: PollPlanner, options: EngineOptions, *, owner: str,
                 job_ids: Sequence[int] | None, clock: Callable[[], float] = time.time):
        self._db = db
        self._client = client
        self._limiter = limiter
        self._recorder = recorder
        self._planner = planner
        self._options = options
        self._owner = owner
        self._job_ids = job_ids
        self._clock = clock

    async def _claim_with_permits(self, claim_rows: Callable[..., list[C]],
                                  release_rows: Callable[[list[C]], int]) -> list[C]:
        """Wait for permits, then claim (with `claim_rows`) as many rows as there are permits;
        the permits of rows not found go back to the limiter unused.

        Cancelled while the claim runs (the engine stopping), the claim still completes on the
        database thread; its rows are then given back with `release_rows` rather than left
        claimed until their lease expires (submit claims would come back in doubt).
        """
        permits = await self._limiter.acquire(self._options.claim_batch, linger=CLAIM_LINGER)
        claiming = asyncio.ensure_future(self._db.call(
            claim_rows, self._owner, permits, lease_seconds=self._options.claim_lease,
            job_ids=self._job_ids))
        try:
            claims = await asyncio.shield(claiming)
        except BaseException:
            self._limiter.release(permits, refund=True)
            await self._give_back(claiming, release_rows)
            raise
        self._limiter.release(permits - len(claims), refund=True)
        return claims

    async def _give_back(self, claiming: asyncio.Future[list[C]],
                         release_rows: Callable[[list[C]], int]) -> None:
        """Release the rows of a claim that was (or is being) made but will not be worked on."""
        try:
            claims = await claiming
        except Exception:  # the claim itself failed: nothing was claimed
            return
        if claims:
            await self._db.call(release_rows, claims)


class Submitter(ClaimingStage):
    """Claims due queued rows and submits them, one task per row."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.in_doubt = 0

    async def claim(self) -> list[SubmitClaim]:
        """Wait for permits, then claim as many due queued rows as there are permits."""
        claims = await self._claim_with_permits(self._db.repo.claim_queued,
                                                self._db.repo.release_submit_claims)
        if claims:
            crash_point("after_claim")
        return claims

    async def submit(self, claim: SubmitClaim) -> None:
        """POST one claimed row (holding one permit) and record what came of it.

        A FatalApiError (401/402) is recorded as a free requeue and then re-raised.
        """
        sent_at = self._clock()
        try:
            task_id = await self._client.submit(claim.request_json)
        except ApiError as exc:
            self._note_limits(exc)
            self._recorder.add(self.outcome_of_error(claim, exc))
            if isinstance(exc, FatalApiError):
                raise
        else:
            crash_point("after_post_before_record")
            self._limiter.on_success()
            # The task was created somewhere during the round trip: its midpoint is the best
            # guess of its start, which progress-based predictions divide by.
            sent_at = (sent_at + self._clock()) / 2
            next_poll = self._planner.first_poll_at(claim.model, sent_at)
            self._recorder.add(TaskCreated(claim.item_id, claim.lease_token, claim.attempt,
                                           task_id, sent_at, next_poll))
        finally:
            self._limiter.release()

    def outcome_of_error(self, claim: SubmitClaim, exc: ApiError) -> Outcome:
        """What a failed submit means for its row (foxapi.md §4, crash rules 3 and 4)."""
        now = self._clock()
        if isinstance(exc, FatalApiError):
            return self._requeue_free(claim, exc, "stopped", now)
        if isinstance(exc, RateLimitedError):
            return self._requeue_free(claim, exc, "rate_limited",
                                      now + self._limiter.paused_for)
        if isinstance(exc, NotSentError):
            return self._requeue_free(claim, exc, "not_sent", now + NOT_SENT_DELAY)
        if isinstance(exc, RequestRejectedError):
            return self._fail(claim, exc, "rejected", exc.code or "rejected")
        if isinstance(exc, InDoubtError):
            return self._in_doubt(claim, exc, now)
        # Temporary refusals (4xx that prove no task, e.g. no_compatible_channel).
        return self._retry_or_fail(claim, exc, "refused", exc.code or "temporary_error", now)

    def _in_doubt(self, claim: SubmitClaim, exc: InDoubtError, now: float) -> Outcome:
        self.in_doubt += 1
        code = exc.code or ("server_error" if exc.status else "no_response")
        if self._options.on_doubt == OnDoubt.HOLD:
            return Fail(claim.item_id, claim.lease_token, "submitting", claim.attempt,
                        "in_doubt", IN_DOUBT_HELD_CODE, f"{exc}; held for review",
                        http_status=exc.status, in_doubt=True)
        log.info("row %s: submit in doubt (%s); resubmitting", claim.row_key, exc)
        return self._retry_or_fail(claim, exc, "in_doubt", code, now, in_doubt=True)

    def _retry_or_fail(self, claim: SubmitClaim, exc: ApiError, outcome: str, code: str,
                       now: float, *, in_doubt: bool = False) -> Outcome:
        if claim.budget_used >= self._options.max_attempts:
            return self._fail(claim, exc, outcome, code, in_doubt=in_doubt)
        return Requeue(claim.item_id, claim.lease_token, "submitting", claim.attempt, outcome,
                       self._options.retry_at(now, claim.budget_used), code, str(exc),
                       http_status=exc.status, in_doubt=in_doubt)

    @staticmethod
    def _fail(claim: SubmitClaim, exc: ApiError, outcome: str, code: str, *,
              in_doubt: bool = False) -> Fail:
        return Fail(claim.item_id, claim.lease_token, "submitting", claim.attempt, outcome,
                    code, str(exc), http_status=exc.status, in_doubt=in_doubt)

    @staticmethod
    def _requeue_free(claim: SubmitClaim, exc: ApiError, outcome: str, at: float) -> Requeue:
        return Requeue(claim.item_id, claim.lease_token, "submitting", claim.attempt, outcome,
                       at, exc.code or outcome, str(exc), http_status=exc.status, free=True)

    def _note_limits(self, exc: ApiError) -> None:
        if isinstance(exc, RateLimitedError):
            self._limiter.on_rate_limited(exc.retry_after)
        elif isinstance(exc, NotSentError):
            self._limiter.pause(NOT_SENT_DELAY)
