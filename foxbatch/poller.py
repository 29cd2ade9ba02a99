"""Polling: claim pending rows whose next look is due, GET their task, record what it says."""

from __future__ import annotations

import logging
from typing import Any

from foxbatch.client import TaskView, completion_fields
from foxbatch.errors import (
    ApiError,
    FatalApiError,
    RateLimitedError,
    TaskNotFoundError,
)
from foxbatch.store.records import Fail, Outcome, PollClaim, PollLater, Requeue, TaskSucceeded
from foxbatch.submitter import ClaimingStage

log = logging.getLogger(__name__)

TRANSIENT_POLL_DELAY = 5.0
# Seconds between the two passes that bring first looks forward: longer than a group commit
# takes to make a just-created task pending (recorder.MAX_DELAY and the commit itself).
BRING_FORWARD_AGAIN = 0.2
MAX_EMPTY_RESULT_POLLS = 10
RUNNING_STATUSES = frozenset({"pending", "processing", "queued", "running", "in_progress"})


class Poller(ClaimingStage):
    """Claims due pending rows and polls their tasks."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._empty_results: dict[int, int] = {}
        self._unknown_statuses: set[str] = set()
        # model -> (its shortened first delay, when to bring first looks forward, and whether
        # to do it once more after that)
        self._shortened: dict[str | None, tuple[float, float, bool]] = {}

    async def claim(self) -> list[PollClaim]:
        """Wait for permits, then claim as many due pending rows as there are permits (first
        bringing forward first looks planned with a first delay since clearly shortened)."""
        await self._bring_first_looks_forward()
        return await self._claim_with_permits(self._db.repo.claim_due_polls,
                                              self._db.repo.release_poll_claims)

    async def _bring_first_looks_forward(self) -> None:
        """Bring forward the first looks of models whose first delay was shortened: at once,
        and once more BRING_FORWARD_AGAIN later for rows whose task id was still waiting for
        its group commit the first time (planned with the longer delay, not yet pending)."""
        now = self._clock()
        for model, (delay, due, again) in list(self._shortened.items()):
            if due > now:
                continue
            moved = await self._db.call(self._db.repo.bring_first_looks_forward, model, delay,
                                        job_ids=self._job_ids)
            log.debug("%d first look(s) of %s brought forward to %.2fs after their submit",
                      moved, model, delay)
            if again:
                self._shortened[model] = (delay, now + BRING_FORWARD_AGAIN, False)
            else:
                del self._shortened[model]

    async def poll(self, claim: PollClaim) -> None:
        """GET one claimed task (holding one permit) and record what it says.

        A FatalApiError (401/402) releases the claim and is re-raised. A first look is moved,
        without a GET, when what was learned since it was planned puts it later.
        """
        if self._moved_first_look(claim):
            self._limiter.release(refund=True)
            return
        try:
            view = await self._client.get_task(claim.task_id)
        except ApiError as exc:
            if isinstance(exc, RateLimitedError):
                self._limiter.on_rate_limited(exc.retry_after)
            if isinstance(exc, FatalApiError):
                self._recorder.add(PollLater(claim.item_id, claim.lease_token, self._clock()))
                raise
            self._recorder.add(self.outcome_of_error(claim, exc))
        else:
            self._limiter.on_success()
            self._recorder.add(self.outcome_of_view(claim, view))
        finally:
            self._limiter.release()

    def _moved_first_look(self, claim: PollClaim) -> bool:
        if claim.polls != 1 or claim.submitted_at is None:
            return False
        due = self._planner.first_look_due(claim.model, claim.submitted_at, self._clock())
        if due is None:
            return False
        self._recorder.add(PollLater(claim.item_id, claim.lease_token, due, looked=False))
        return True

    def outcome_of_view(self, claim: PollClaim, view: TaskView) -> Outcome:
        """What a task's state means for its row."""
        now = self._clock()
        if claim.polls == 1:
            self._observe_first_look(claim.model, view, now)
        if view.status == "completed":
            return self._completed(claim, view, now)
        if view.status == "failed":
            return self._retry_or_fail(claim, view.error_code or "task_failed",
                                       view.error_message or "the task failed", now,
                                       "task_failed")
        if view.status == "cancelled":
            return Fail(claim.item_id, claim.lease_token, "pending", claim.attempt,
                        "task_cancelled", "task_cancelled", "FoxAPI cancelled the task")
        if view.status not in RUNNING_STATUSES and view.status not in self._unknown_statuses:
            self._unknown_statuses.add(view.status)
            log.warning("task %s has unknown status %r; polling on", view.task_id, view.status)
        return PollLater(claim.item_id, claim.lease_token, self._planner.next_poll_at(
            claim.model, sent_at=claim.submitted_at, now=now, progress=view.progress),
            least_duration=self._planner.least_duration(sent_at=claim.submitted_at, now=now,
                                                        progress=view.progress))

    def _observe_first_look(self, model: str | None, view: TaskView, now: float) -> None:
        """Teach the planner what a first look found; note a first delay that became clearly
        shorter, so that the next claim brings the first looks planned with it forward."""
        self._planner.observe_first_poll(model, done=view.status != "pending"
                                         and view.status not in RUNNING_STATUSES, now=now)
        shortened = self._planner.shortened_first_delay(model)
        if shortened is not None:
            self._shortened[model] = (shortened, now, True)

    def outcome_of_error(self, claim: PollClaim, exc: ApiError) -> Outcome:
        """What a failed poll means: a vanished task is resubmitted, anything else re-polled."""
        now = self._clock()
        if isinstance(exc, TaskNotFoundError):
            return self._retry_or_fail(claim, "task_not_found", str(exc), now, "task_gone")
        delay = self._limiter.paused_for if isinstance(exc, RateLimitedError) else (
            TRANSIENT_POLL_DELAY)
        log.debug("poll of %s failed (%s); again in %.1fs", claim.task_id, exc, delay)
        return PollLater(claim.item_id, claim.lease_token, now + delay)

    def _completed(self, claim: PollClaim, view: TaskView, now: float) -> Outcome:
        if view.result is None:
            seen = self._empty_results.get(claim.item_id, 0) + 1
            self._empty_results[claim.item_id] = seen
            if seen >= MAX_EMPTY_RESULT_POLLS:
                self._empty_results.pop(claim.item_id, None)
                return self._retry_or_fail(claim, "empty_result", f"task completed without "
                                           f"results in {seen} polls", now, "empty_result")
            return PollLater(claim.item_id, claim.lease_token,
                             self._planner.empty_result_poll_at(now))
        self._empty_results.pop(claim.item_id, None)
        fields = completion_fields(view.result)
        return TaskSucceeded(
            claim.item_id, claim.lease_token, claim.attempt, fields["result_json"],
            fields["output"],
            fields["finish_reason"], fields["result_model"], fields["prompt_tokens"],
            fields["completion_tokens"], fields["total_tokens"], finished_at=now)

    def _retry_or_fail(self, claim: PollClaim, code: str, message: str, now: float,
                       outcome: str) -> Outcome:
        if claim.budget_used >= self._options.max_attempts:
            return Fail(claim.item_id, claim.lease_token, "pending", claim.attempt, outcome,
                        code, message)
        return Requeue(claim.item_id, claim.lease_token, "pending", claim.attempt, outcome,
                       self._options.retry_at(now, claim.budget_used), code, message)
