"""Claims, outcomes (the group commit) and leases: a worker's writes to the rows it works on.

A claim takes rows under a new lease token; every later write for the claim is compare-and-set
on that token and the expected status, so a worker that lost its lease changes nothing.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Double, Row, bindparam, case, func, select, update

from foxbatch.crashpoints import crash_point
from foxbatch.models import CANCEL_REQUESTED_CODE, IN_DOUBT_HELD_CODE, OnDoubt
from foxbatch.store.records import (
    Applied,
    Fail,
    Outcome,
    PollClaim,
    PollLater,
    Requeue,
    SubmitClaim,
    TaskCreated,
    TaskSucceeded,
)
from foxbatch.store.sql import (
    Prepared,
    Queries,
    _attempt_update,
    _has_queued,
    _job_filter,
    _job_ids_filter,
    _lock_items,
)
from foxbatch.store.tables import attempts, items, jobs


def new_token() -> str:
    """A fresh lease token (32 hex characters)."""
    return uuid.uuid4().hex


class ClaimQueries(Queries):
    """Claiming rows, recording what became of them, and their leases."""

    # -- claims -----------------------------------------------------------------------------

    def claim_queued(self, owner: str, limit: int, *, lease_seconds: float,
                     job_ids: Sequence[int] | None = None) -> list[SubmitClaim]:
        """Claim up to `limit` due queued rows: queued -> submitting, with a lease and a new
        attempt row, committed before anything is sent (crash rule 1)."""
        if limit <= 0:
            return []
        now = self.clock()
        token = new_token()
        lease = {"b_owner": owner, "b_token": token, "b_until": now + lease_seconds,
                 "b_now": now}
        with self.engine.begin() as conn:
            rows: list[Row[Any]] = []
            # One job at a time: the index (job_id, status, next_attempt_at, row_index) then
            # hands over the due rows in order, so a claim costs O(rows claimed) however many
            # rows the job still has queued; only jobs with a due row are visited.
            for job_id in self._jobs_with_due_rows(conn, job_ids, now):
                if len(rows) >= limit:
                    break
                rows.extend(_CLAIM_QUEUED_OF_JOB.rows(conn, b_job=job_id,
                                                      b_limit=limit - len(rows), **lease))
            _NEW_ATTEMPT.run_many(conn, [{"b_item": r.id, "b_number": r.attempts}
                                         for r in rows], b_worker=owner, b_now=now)
        return sorted((SubmitClaim(
            item_id=r.id, job_id=r.job_id, row_key=r.row_key, request_json=r.request,
            request_hash=r.request_hash, model=r.model, attempt=r.attempts,
            free_attempts=r.free_attempts, lease_token=token) for r in rows),
            key=lambda c: c.item_id)

    @staticmethod
    def _jobs_with_due_rows(conn: Connection, job_ids: Sequence[int] | None,
                            now: float) -> list[int]:
        """The jobs (of `job_ids`, else all) with a queued row due by `now`, in id order; a
        single job is taken as it is (its claim finds its due rows, or none)."""
        if job_ids is not None and len(job_ids) == 1:
            return list(job_ids)
        if job_ids is None:
            return [job_id for (job_id,) in _JOBS_WITH_DUE_ROWS.rows(conn, b_now=now)]
        return list(conn.execute(select(jobs.c.id).where(
            _has_queued(due_by=now), *_job_ids_filter(job_ids)).order_by(jobs.c.id)).scalars())

    def claim_due_polls(self, owner: str, limit: int, *, lease_seconds: float,
                        job_ids: Sequence[int] | None = None) -> list[PollClaim]:
        """Claim up to `limit` pending rows whose next poll is due.

        The claim moves next_poll_at `lease_seconds` ahead: if this worker dies, the row simply
        becomes due again then (a visibility timeout); the new token fences late writes.
        """
        if limit <= 0:
            return []
        now = self.clock()
        token = new_token()
        params = {"b_owner": owner, "b_token": token, "b_until": now + lease_seconds,
                  "b_now": now, "b_limit": limit}
        with self.engine.begin() as conn:
            if job_ids is None:
                rows = _CLAIM_DUE_POLLS.rows(conn, **params)
            elif len(job_ids) == 1:
                rows = _CLAIM_DUE_POLLS_OF_JOB.rows(conn, b_job=job_ids[0], **params)
            else:
                rows = conn.execute(_claim_due_polls(_job_filter(job_ids)), params).all()
        return sorted((PollClaim(
            item_id=r.id, job_id=r.job_id, task_id=r.task_id, model=r.model,
            attempt=r.attempts, free_attempts=r.free_attempts, polls=r.polls,
            submitted_at=r.submitted_at, lease_token=token) for r in rows),
            key=lambda c: c.item_id)

    def bring_first_looks_forward(self, model: str | None, delay: float, *,
                                  job_ids: Sequence[int] | None = None) -> int:
        """Unclaimed pending rows of `model` not looked at yet (no GET so far) whose first look
        is planned later than `delay` after their submit: look then instead (at once, if that
        is past). Returns the rows moved. Rows another worker holds are skipped."""
        now = self.clock()
        wanted = items.c.submitted_at + delay
        same_model = items.c.model.is_(None) if model is None else items.c.model == model
        later = (select(items.c.id)
                 .where(items.c.status == "pending", items.c.polls == 0,
                        items.c.lease_token.is_(None), same_model,
                        items.c.next_poll_at > wanted, *_job_filter(job_ids))
                 .with_for_update(skip_locked=True))
        # IN, not a CTE: SQLite reports no rowcount for a statement that starts with WITH.
        stmt = (update(items)
                .where(items.c.id.in_(later), items.c.status == "pending",
                       items.c.lease_token.is_(None))
                .values(next_poll_at=wanted, updated_at=now))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def renew_leases(self, owner: str, claims: Sequence[SubmitClaim | PollClaim], *,
                     lease_seconds: float) -> int:
        """Extend the leases of this owner's claims (heartbeat); returns rows still owned.

        Rows are locked in id order (a claim of another worker may hold one for a moment); a
        row whose lease another worker took meanwhile (new token) is left alone.
        """
        if not claims:
            return 0
        now = self.clock()
        until = now + lease_seconds
        tokens = sorted({c.lease_token for c in claims})
        owned = (select(items.c.id)
                 .where(items.c.id.in_(sorted({c.item_id for c in claims})),
                        items.c.lease_owner == owner, items.c.lease_token.in_(tokens),
                        items.c.status.in_(("submitting", "pending")))
                 .order_by(items.c.id).with_for_update())
        stmt = (update(items)
                .where(items.c.id.in_(owned), items.c.lease_token.in_(tokens))
                .values(lease_until=until,
                        next_poll_at=_case_pending(until, items.c.next_poll_at)))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    # -- outcomes (group commit) ------------------------------------------------------------

    def apply(self, outcomes: Sequence[Outcome]) -> Applied:
        """Apply a mixed batch of outcomes in one transaction; each is compare-and-set."""
        applied = Applied()
        if not outcomes:
            return applied
        groups: dict[type, list[Any]] = defaultdict(list)
        for outcome in outcomes:
            groups[type(outcome)].append(outcome)
        now = self.clock()
        with self.engine.begin() as conn:
            _lock_items(conn, [o.item_id for o in outcomes])
            for kind, batch in groups.items():
                done = _APPLIERS[kind](self, conn, batch, now)
                applied.applied += done
                applied.refused += len(batch) - done
                crash_point("mid_group_commit")
            crash_point("after_record_before_commit")
        return applied

    def _apply_created(self, conn: Connection, batch: list[TaskCreated], now: float) -> int:
        # The one write not fenced by the lease: the task id goes on this claim's own attempt row
        # even if the row was taken from us, so that every task FoxAPI ever created for us is in
        # the audit trail. Only an attempt still `sending` (not rescued) becomes `created`.
        rows = [{"b_item": o.item_id, "b_number": o.attempt, "b_id": o.item_id,
                 "b_token": o.lease_token, "b_task_id": o.task_id, "b_sent_at": o.sent_at,
                 "b_next_poll": o.next_poll_at} for o in batch]
        _CREATED_ATTEMPT.run_many(conn, rows)
        return _CREATED_ITEM.run_many(conn, rows, b_now=now)

    def _apply_succeeded(self, conn: Connection, batch: list[TaskSucceeded], now: float) -> int:
        rows = [{"b_item": o.item_id, "b_number": o.attempt, "b_id": o.item_id,
                 "b_token": o.lease_token, "b_status": "pending", "b_result": o.result_json,
                 "b_output": o.output, "b_finish": o.finish_reason, "b_model": o.result_model,
                 "b_pt": o.prompt_tokens, "b_ct": o.completion_tokens, "b_tt": o.total_tokens,
                 "b_finished": o.finished_at} for o in batch]
        _SUCCEEDED_ATTEMPT.run_many(conn, rows)
        return _SUCCEEDED_ITEM.run_many(conn, rows, b_now=now)

    def _apply_poll_later(self, conn: Connection, batch: list[PollLater], now: float) -> int:
        return _POLL_LATER_ITEM.run_many(conn, [
            {"b_id": o.item_id, "b_token": o.lease_token, "b_next_poll": o.next_poll_at,
             "b_unlooked": 0 if o.looked else 1, "b_least": o.least_duration} for o in batch],
            b_now=now)

    def _apply_requeue(self, conn: Connection, batch: list[Requeue], now: float) -> int:
        self._close_attempts(conn, batch, now)
        return _REQUEUED_ITEM.run_many(conn, [
            {"b_id": o.item_id, "b_token": o.lease_token, "b_status": o.expected_status,
             "b_next": o.next_attempt_at, "b_code": o.error_code,
             "b_message": o.error_message, "b_doubt": int(o.in_doubt), "b_free": int(o.free)}
            for o in batch], b_now=now)

    def _apply_fail(self, conn: Connection, batch: list[Fail], now: float) -> int:
        self._close_attempts(conn, batch, now)
        return _FAILED_ITEM.run_many(conn, [
            {"b_id": o.item_id, "b_token": o.lease_token, "b_status": o.expected_status,
             "b_code": o.error_code, "b_message": o.error_message} for o in batch], b_now=now)

    @staticmethod
    def _close_attempts(conn: Connection, batch: Sequence[Requeue | Fail], now: float) -> None:
        """Write how each claim's attempt ended; runs before the items update (it checks that
        the claim still owns its row)."""
        _CLOSED_ATTEMPT.run_many(conn, [
            {"b_item": o.item_id, "b_number": o.attempt, "b_token": o.lease_token,
             "b_status": o.expected_status, "b_outcome": o.attempt_outcome,
             "b_http": o.http_status, "b_doubt": o.in_doubt,
             "b_error": _attempt_error(o.error_code, o.error_message)} for o in batch],
            b_now=now)

    # -- leases -----------------------------------------------------------------------------

    def release_submit_claims(self, claims: Sequence[SubmitClaim]) -> int:
        """Give back claims whose POST was never sent: submitting -> queued, attempt undone."""
        if not claims:
            return 0
        now = self.clock()
        stmt = _owned_update("submitting").values(
            status="queued", attempts=items.c.attempts - 1, next_attempt_at=now,
            lease_owner=None, lease_token=None, lease_until=None, updated_at=now)
        with self.engine.begin() as conn:
            _lock_items(conn, [c.item_id for c in claims])
            conn.execute(attempts.delete().where(
                attempts.c.item_id == bindparam("b_item"),
                attempts.c.number == bindparam("b_number"), attempts.c.outcome == "sending",
                _still_owned()),
                [{"b_item": c.item_id, "b_number": c.attempt, "b_token": c.lease_token,
                  "b_status": "submitting"} for c in claims])
            return conn.execute(stmt, [{"b_id": c.item_id, "b_token": c.lease_token}
                                       for c in claims]).rowcount

    def release_poll_claims(self, claims: Sequence[PollClaim]) -> int:
        """Give back poll claims that were not polled: due again now."""
        if not claims:
            return 0
        now = self.clock()
        stmt = _owned_update("pending").values(
            next_poll_at=now, polls=items.c.polls - 1, lease_owner=None, lease_token=None,
            lease_until=None, updated_at=now)
        with self.engine.begin() as conn:
            return conn.execute(stmt, [{"b_id": c.item_id, "b_token": c.lease_token}
                                       for c in claims]).rowcount

    def rescue_expired(self, *, on_doubt: OnDoubt = OnDoubt.RESUBMIT,
                       job_ids: Sequence[int] | None = None, limit: int = 1000) -> int:
        """Rows left `submitting` by a dead worker (lease expired) are in doubt (crash rule 3):
        re-queued and counted, or with `hold` failed with code in_doubt_held for a human."""
        now = self.clock()
        expired = (select(items.c.id)
                   .where(items.c.status == "submitting", items.c.lease_until < now,
                          *_job_filter(job_ids))
                   .limit(limit).with_for_update(skip_locked=True).cte("expired"))
        if on_doubt == OnDoubt.RESUBMIT:
            values: dict[str, Any] = {
                "status": _queued_unless_cancelled(), "finished_at": _now_if_cancelled(now),
                "next_attempt_at": now,
                "in_doubt_resubmits": items.c.in_doubt_resubmits + 1,
                "error_code": "in_doubt", "error_message": "worker lease expired during submit"}
        else:
            values = {"status": "failed", "error_code": IN_DOUBT_HELD_CODE, "finished_at": now,
                      "error_message": "worker lease expired during submit; held for review "
                                       "(foxbatch retry JOB --code in_doubt_held resubmits)"}
        stmt = (update(items)
                .where(items.c.id == expired.c.id,
                       items.c.status == "submitting", items.c.lease_until < now)
                .values(lease_owner=None, lease_token=None, lease_until=None, updated_at=now,
                        **values)
                .returning(items.c.id, items.c.attempts))
        with self.engine.begin() as conn:
            rows = conn.execute(stmt).all()
            if rows:
                conn.execute(_attempt_update(outcome="in_doubt", in_doubt=True, finished_at=now,
                                             error="worker lease expired"),
                             [{"b_item": r.id, "b_number": r.attempts} for r in rows])
        return len(rows)

    def lease_owners(self, job_ids: Sequence[int] | None = None) -> list[str]:
        """The workers holding claims on rows of these jobs (all jobs when None)."""
        stmt = (select(items.c.lease_owner).distinct()
                .where(items.c.status.in_(("submitting", "pending")),
                       items.c.lease_owner.is_not(None), *_job_filter(job_ids)))
        with self._read() as conn:
            return [owner for (owner,) in conn.execute(stmt)]

    def expire_claims_of(self, owners: Sequence[str]) -> int:
        """End the claims of workers known to be gone: their submitting rows' leases expire
        now (the next rescue treats them as in doubt), their poll claims are due again now."""
        now = self.clock()
        with self.engine.begin() as conn:
            submitting = conn.execute(
                update(items).where(items.c.status == "submitting",
                                    items.c.lease_owner.in_(list(owners)))
                .values(lease_until=now - 1, updated_at=now)).rowcount
            polling = conn.execute(
                update(items).where(items.c.status == "pending",
                                    items.c.lease_owner.in_(list(owners)))
                .values(next_poll_at=now, lease_owner=None, lease_token=None, lease_until=None,
                        updated_at=now)).rowcount
        return submitting + polling


def _owned_update(expected_status: Any) -> Any:
    """UPDATE items for one claimed row: applies only while status (a value, or a bound
    parameter) and lease token still match."""
    return update(items).where(items.c.id == bindparam("b_id"),
                               items.c.status == expected_status,
                               items.c.lease_token == bindparam("b_token"))


def _still_owned() -> Any:
    """EXISTS: item `b_item` is still in status `b_status` under lease token `b_token`."""
    return (select(items.c.id)
            .where(items.c.id == bindparam("b_item"), items.c.status == bindparam("b_status"),
                   items.c.lease_token == bindparam("b_token"))
            .exists())


def _owned_attempt_update(**values: Any) -> Any:
    """UPDATE of one claim's attempt row that applies only while the claim owns its item."""
    return _attempt_update(**values).where(_still_owned())


def _claim_queued_of_job() -> Any:
    """UPDATE ... RETURNING that claims up to `b_limit` queued rows of job `b_job` due by
    `b_now`, in order, for `b_owner` under lease `b_token` until `b_until`."""
    due = (select(items.c.id)
           .where(items.c.job_id == bindparam("b_job"), items.c.status == "queued",
                  items.c.next_attempt_at <= bindparam("b_now"))
           .order_by(items.c.next_attempt_at, items.c.row_index)
           .limit(bindparam("b_limit")).with_for_update(skip_locked=True).cte("due"))
    return (update(items)
            .where(items.c.id == due.c.id, items.c.status == "queued")
            .values(status="submitting", lease_owner=bindparam("b_owner"),
                    lease_token=bindparam("b_token"), lease_until=bindparam("b_until"),
                    attempts=items.c.attempts + 1, error_code=None, error_message=None,
                    updated_at=bindparam("b_now"))
            .returning(items.c.id, items.c.job_id, items.c.row_key, items.c.request,
                       items.c.request_hash, items.c.model, items.c.attempts,
                       items.c.free_attempts))


def _claim_due_polls(job_filter: list[Any]) -> Any:
    """UPDATE ... RETURNING that claims up to `b_limit` pending rows (of the jobs
    `job_filter` allows) whose next poll is due by `b_now`, earliest first: lease `b_token` of
    `b_owner` until `b_until`, which is also when the row falls due again."""
    due = (select(items.c.id)
           .where(items.c.status == "pending", items.c.next_poll_at <= bindparam("b_now"),
                  *job_filter)
           .order_by(items.c.next_poll_at)
           .limit(bindparam("b_limit")).with_for_update(skip_locked=True).cte("due"))
    return (update(items)
            .where(items.c.id == due.c.id, items.c.status == "pending")
            .values(lease_owner=bindparam("b_owner"), lease_token=bindparam("b_token"),
                    lease_until=bindparam("b_until"), next_poll_at=bindparam("b_until"),
                    polls=items.c.polls + 1, updated_at=bindparam("b_now"))
            .returning(items.c.id, items.c.job_id, items.c.task_id, items.c.model,
                       items.c.attempts, items.c.free_attempts, items.c.polls,
                       items.c.submitted_at))


def _queued_unless_cancelled() -> Any:
    """The status of a row going back to the queue: `cancelled` instead if the user cancelled
    it while it was in flight (CANCEL_REQUESTED_CODE; the value before this UPDATE)."""
    return case((items.c.error_code == CANCEL_REQUESTED_CODE, "cancelled"), else_="queued")


def _now_if_cancelled(now: Any) -> Any:
    return case((items.c.error_code == CANCEL_REQUESTED_CODE, now), else_=items.c.finished_at)


def _case_pending(until: float, current: Any) -> Any:
    return case((items.c.status == "pending", until), else_=current)


def _attempt_error(code: str | None, message: str | None) -> str | None:
    if code is None and message is None:
        return None
    return f"{code}: {message}" if code else message


# Claims, compiled once per dialect (see Prepared); the rare claim over several named jobs is
# built each time (its IN list varies).
_JOBS_WITH_DUE_ROWS = Prepared(select(jobs.c.id).where(_has_queued(due_by=bindparam("b_now")))
                               .order_by(jobs.c.id))
_CLAIM_QUEUED_OF_JOB = Prepared(_claim_queued_of_job())
_CLAIM_DUE_POLLS = Prepared(_claim_due_polls([]))
_CLAIM_DUE_POLLS_OF_JOB = Prepared(_claim_due_polls([items.c.job_id == bindparam("b_job")]))

# The group commit's statements, compiled once per dialect (see Prepared). `b_now` is the
# time of the commit; the others come from each outcome.
_NEW_ATTEMPT = Prepared(attempts.insert().values(
    item_id=bindparam("b_item"), number=bindparam("b_number"), worker=bindparam("b_worker"),
    sent_at=bindparam("b_now"), outcome="sending", in_doubt=False))
_SENDING = attempts.c.outcome == "sending"
_CREATED_ATTEMPT = Prepared(_attempt_update(
    task_id=bindparam("b_task_id"), http_status=200,
    outcome=case((_SENDING, "created"), else_=attempts.c.outcome),
    sent_at=case((_SENDING, bindparam("b_sent_at")), else_=attempts.c.sent_at)))
_CREATED_ITEM = Prepared(_owned_update("submitting").values(
    status="pending", task_id=bindparam("b_task_id"), submitted_at=bindparam("b_sent_at"),
    next_poll_at=bindparam("b_next_poll"), lease_owner=None, lease_token=None,
    lease_until=None, polls=0, updated_at=bindparam("b_now")))
_SUCCEEDED_ATTEMPT = Prepared(_owned_attempt_update(outcome="succeeded",
                                                         finished_at=bindparam("b_finished")))
_SUCCEEDED_ITEM = Prepared(_owned_update("pending").values(
    status="succeeded", result=bindparam("b_result"), output=bindparam("b_output"),
    finish_reason=bindparam("b_finish"), result_model=bindparam("b_model"),
    prompt_tokens=bindparam("b_pt"), completion_tokens=bindparam("b_ct"),
    total_tokens=bindparam("b_tt"), finished_at=bindparam("b_finished"),
    next_poll_at=None, lease_owner=None, lease_token=None, lease_until=None,
    error_code=None, error_message=None, updated_at=bindparam("b_now")))
_POLL_LATER_ITEM = Prepared(_owned_update("pending").values(
    next_poll_at=bindparam("b_next_poll"), lease_owner=None, lease_token=None,
    lease_until=None, polls=items.c.polls - bindparam("b_unlooked"),
    least_duration=func.coalesce(bindparam("b_least", type_=Double), items.c.least_duration),
    updated_at=bindparam("b_now")))
_CLOSED_ATTEMPT = Prepared(_owned_attempt_update(
    outcome=bindparam("b_outcome"), http_status=bindparam("b_http"),
    error=bindparam("b_error"), in_doubt=bindparam("b_doubt"), finished_at=bindparam("b_now")))
_REQUEUED_ITEM = Prepared(_owned_update(bindparam("b_status")).values(
    status=_queued_unless_cancelled(), finished_at=_now_if_cancelled(bindparam("b_now")),
    next_attempt_at=bindparam("b_next"),
    error_code=bindparam("b_code"), error_message=bindparam("b_message"),
    in_doubt_resubmits=items.c.in_doubt_resubmits + bindparam("b_doubt"),
    free_attempts=items.c.free_attempts + bindparam("b_free"), task_id=None,
    next_poll_at=None, lease_owner=None, lease_token=None, lease_until=None,
    updated_at=bindparam("b_now")))
_FAILED_ITEM = Prepared(_owned_update(bindparam("b_status")).values(
    status="failed", error_code=bindparam("b_code"),
    error_message=bindparam("b_message"), next_poll_at=None, next_attempt_at=None,
    lease_owner=None, lease_token=None, lease_until=None, finished_at=bindparam("b_now"),
    updated_at=bindparam("b_now")))

_APPLIERS: dict[type, Callable[..., int]] = {
    TaskCreated: ClaimQueries._apply_created,
    TaskSucceeded: ClaimQueries._apply_succeeded,
    PollLater: ClaimQueries._apply_poll_later,
    Requeue: ClaimQueries._apply_requeue,
    Fail: ClaimQueries._apply_fail,
}
