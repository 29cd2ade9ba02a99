"""The repository: every SQL statement foxbatch runs lives here.

Every state change is compare-and-set: an UPDATE conditioned on the expected status and, for a
claimed row, on the lease token of the claim. A worker that lost its lease (it was paused, its
lease expired and another worker took the row) changes nothing, in `items` and in `attempts`
alike; the one write it still makes is the id of a task FoxAPI created for it (the audit trail).
Claims use FOR UPDATE SKIP LOCKED on PostgreSQL and BEGIN IMMEDIATE on SQLite, so two workers
never claim the same row. On PostgreSQL a transaction that waits for row locks (a group commit,
a release, a heartbeat) takes them in id order first, and claims and rescues skip locked rows,
so workers never deadlock one another.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    Select,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from foxbatch.crashpoints import crash_point
from foxbatch.errors import UnknownJobError
from foxbatch.models import (
    ACTIVE_STATUSES,
    ALL_STATUSES,
    CANCEL_REQUESTED_CODE,
    IN_DOUBT_HELD_CODE,
    OnDoubt,
)
from foxbatch.store.ingesting import COMMIT_ROWS, INSERT_CHUNK, NEW_ITEM_COLUMNS, IngestQueries
from foxbatch.store.records import (
    Applied,
    ErrorCount,
    Fail,
    Job,
    JobStats,
    Outcome,
    PollClaim,
    PollLater,
    RequestChange,
    Requeue,
    SubmitClaim,
    TaskCreated,
    TaskSucceeded,
    Worker,
)
from foxbatch.store.sql import KEY_LOOKUP_CHUNK, _attempt_update, _job_filter, _lock_items
from foxbatch.store.tables import attempts, items, jobs, rate_budgets, workers

__all__ = ["COMMIT_ROWS", "FORGET_WORKERS_AFTER", "INSERT_CHUNK", "IN_FLIGHT", "KEY_LOOKUP_CHUNK",
           "NEW_ITEM_COLUMNS", "Repository", "new_token"]

# Rows of workers whose last sign of life is older than this are deleted when a worker starts.
FORGET_WORKERS_AFTER = 7 * 24 * 3600.0
# States of a row whose task may exist at FoxAPI right now.
IN_FLIGHT = ("submitting", "pending")


def new_token() -> str:
    """A fresh lease token (32 hex characters)."""
    return uuid.uuid4().hex


class Repository(IngestQueries):
    """All reads and writes of the task store, over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time):
        self.engine = engine
        self.clock = clock
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # -- jobs -------------------------------------------------------------------------------

    def ensure_job(self, name: str, *, source: str | None = None,
                   defaults: dict[str, Any] | None = None) -> Job:
        """Return the job called `name`, creating it first if it does not exist."""
        now = self.clock()
        stmt = self._insert(jobs).values(
            name=name, source=source, defaults=json.dumps(defaults or {}, sort_keys=True),
            created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["name"])
        with self.engine.begin() as conn:
            conn.execute(stmt)
            row = conn.execute(select(jobs).where(jobs.c.name == name)).mappings().one()
        return _job(row)

    def find_job(self, name: str) -> Job | None:
        """The job called `name`, or None."""
        with self._read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.name == name)).mappings().first()
        return _job(row) if row else None

    def get_job(self, name: str) -> Job:
        """The job called `name`; UnknownJobError if there is none."""
        job = self.find_job(name)
        if job is None:
            raise UnknownJobError(f"no job named {name!r} in this database")
        return job

    def list_jobs(self) -> list[Job]:
        """Every job, oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(jobs).order_by(jobs.c.id)).mappings().all()
        return [_job(r) for r in rows]

    # -- claims -----------------------------------------------------------------------------

    def claim_queued(self, owner: str, limit: int, *, lease_seconds: float,
                     job_ids: Sequence[int] | None = None) -> list[SubmitClaim]:
        """Claim up to `limit` due queued rows: queued -> submitting, with a lease and a new
        attempt row, committed before anything is sent (crash rule 1)."""
        if limit <= 0:
            return []
        now = self.clock()
        token = new_token()
        values = {"status": "submitting", "lease_owner": owner, "lease_token": token,
                  "lease_until": now + lease_seconds, "attempts": items.c.attempts + 1,
                  "error_code": None, "error_message": None, "updated_at": now}
        with self.engine.begin() as conn:
            rows: list[RowMapping] = []
            # One job at a time: the partial index (job_id, next_attempt_at, row_index) then
            # hands over the due rows in order, so a claim costs O(rows claimed) however many
            # rows the job still has queued.
            for job_id in job_ids if job_ids is not None else self._job_ids(conn):
                if len(rows) >= limit:
                    break
                rows.extend(conn.execute(_claim_due_in_job(job_id, limit - len(rows), now,
                                                           values)).mappings().all())
            if rows:
                conn.execute(attempts.insert(), [
                    {"item_id": r["id"], "number": r["attempts"], "worker": owner,
                     "sent_at": now, "outcome": "sending", "in_doubt": False} for r in rows])
        return sorted((SubmitClaim(
            item_id=r["id"], job_id=r["job_id"], row_key=r["row_key"], request_json=r["request"],
            request_hash=r["request_hash"], model=r["model"], attempt=r["attempts"],
            free_attempts=r["free_attempts"], lease_token=token) for r in rows),
            key=lambda c: c.item_id)

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
        due = (select(items.c.id)
               .where(items.c.status == "pending", items.c.next_poll_at <= now,
                      *_job_filter(job_ids))
               .order_by(items.c.next_poll_at)
               .limit(limit).with_for_update(skip_locked=True).cte("due"))
        stmt = (update(items)
                .where(items.c.id == due.c.id, items.c.status == "pending")
                .values(lease_owner=owner, lease_token=token, lease_until=now + lease_seconds,
                        next_poll_at=now + lease_seconds, polls=items.c.polls + 1,
                        updated_at=now)
                .returning(items.c.id, items.c.job_id, items.c.task_id, items.c.model,
                           items.c.attempts, items.c.free_attempts, items.c.polls,
                           items.c.submitted_at))
        with self.engine.begin() as conn:
            rows = conn.execute(stmt).mappings().all()
        return sorted((PollClaim(
            item_id=r["id"], job_id=r["job_id"], task_id=r["task_id"], model=r["model"],
            attempt=r["attempts"], free_attempts=r["free_attempts"], polls=r["polls"],
            submitted_at=r["submitted_at"],
            lease_token=token) for r in rows), key=lambda c: c.item_id)

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
        sending = attempts.c.outcome == "sending"
        conn.execute(_attempt_update(task_id=bindparam("b_task_id"), http_status=200,
                                     outcome=case((sending, "created"), else_=attempts.c.outcome),
                                     sent_at=case((sending, bindparam("b_sent_at")),
                                                  else_=attempts.c.sent_at)),
                     [{"b_item": o.item_id, "b_number": o.attempt, "b_task_id": o.task_id,
                       "b_sent_at": o.sent_at} for o in batch])
        stmt = _owned_update("submitting").values(
            status="pending", task_id=bindparam("b_task_id"), submitted_at=bindparam("b_sent_at"),
            next_poll_at=bindparam("b_next_poll"), lease_owner=None, lease_token=None,
            lease_until=None, polls=0, updated_at=now)
        return conn.execute(stmt, [
            {"b_id": o.item_id, "b_token": o.lease_token, "b_task_id": o.task_id,
             "b_sent_at": o.sent_at, "b_next_poll": o.next_poll_at} for o in batch]).rowcount

    def _apply_succeeded(self, conn: Connection, batch: list[TaskSucceeded], now: float) -> int:
        conn.execute(_owned_attempt_update(outcome="succeeded", finished_at=bindparam("b_at")),
                     [{"b_item": o.item_id, "b_number": o.attempt, "b_token": o.lease_token,
                       "b_status": "pending", "b_at": o.finished_at} for o in batch])
        stmt = _owned_update("pending").values(
            status="succeeded", result=bindparam("b_result"), output=bindparam("b_output"),
            finish_reason=bindparam("b_finish"), result_model=bindparam("b_model"),
            prompt_tokens=bindparam("b_pt"), completion_tokens=bindparam("b_ct"),
            total_tokens=bindparam("b_tt"), finished_at=bindparam("b_finished"),
            next_poll_at=None, lease_owner=None, lease_token=None, lease_until=None,
            error_code=None, error_message=None, updated_at=now)
        return conn.execute(stmt, [
            {"b_id": o.item_id, "b_token": o.lease_token, "b_result": o.result_json,
             "b_output": o.output, "b_finish": o.finish_reason, "b_model": o.result_model,
             "b_pt": o.prompt_tokens, "b_ct": o.completion_tokens, "b_tt": o.total_tokens,
             "b_finished": o.finished_at} for o in batch]).rowcount

    def _apply_poll_later(self, conn: Connection, batch: list[PollLater], now: float) -> int:
        stmt = _owned_update("pending").values(
            next_poll_at=bindparam("b_next_poll"), lease_owner=None, lease_token=None,
            lease_until=None, polls=items.c.polls - bindparam("b_unlooked"), updated_at=now)
        return conn.execute(stmt, [
            {"b_id": o.item_id, "b_token": o.lease_token, "b_next_poll": o.next_poll_at,
             "b_unlooked": 0 if o.looked else 1} for o in batch]).rowcount

    def _apply_requeue(self, conn: Connection, batch: list[Requeue], now: float) -> int:
        self._close_attempts(conn, batch, now)
        done = 0
        for status, group in _by_status(batch).items():
            stmt = _owned_update(status).values(
                status=_queued_unless_cancelled(), finished_at=_now_if_cancelled(now),
                next_attempt_at=bindparam("b_next"),
                error_code=bindparam("b_code"), error_message=bindparam("b_message"),
                in_doubt_resubmits=items.c.in_doubt_resubmits + bindparam("b_doubt"),
                free_attempts=items.c.free_attempts + bindparam("b_free"), task_id=None,
                next_poll_at=None, lease_owner=None, lease_token=None, lease_until=None,
                updated_at=now)
            done += conn.execute(stmt, [
                {"b_id": o.item_id, "b_token": o.lease_token, "b_next": o.next_attempt_at,
                 "b_code": o.error_code, "b_message": o.error_message,
                 "b_doubt": int(o.in_doubt), "b_free": int(o.free)} for o in group]).rowcount
        return done

    def _apply_fail(self, conn: Connection, batch: list[Fail], now: float) -> int:
        self._close_attempts(conn, batch, now)
        done = 0
        for status, group in _by_status(batch).items():
            stmt = _owned_update(status).values(
                status="failed", error_code=bindparam("b_code"),
                error_message=bindparam("b_message"), next_poll_at=None, next_attempt_at=None,
                lease_owner=None, lease_token=None, lease_until=None, finished_at=now,
                updated_at=now)
            done += conn.execute(stmt, [
                {"b_id": o.item_id, "b_token": o.lease_token, "b_code": o.error_code,
                 "b_message": o.error_message} for o in group]).rowcount
        return done

    @staticmethod
    def _close_attempts(conn: Connection, batch: Sequence[Requeue | Fail], now: float) -> None:
        """Write how each claim's attempt ended; runs before the items update (it checks that
        the claim still owns its row)."""
        conn.execute(
            _owned_attempt_update(outcome=bindparam("b_outcome"), http_status=bindparam("b_http"),
                                  error=bindparam("b_error"), in_doubt=bindparam("b_doubt"),
                                  finished_at=now),
            [{"b_item": o.item_id, "b_number": o.attempt, "b_token": o.lease_token,
              "b_status": o.expected_status, "b_outcome": o.attempt_outcome,
              "b_http": o.http_status, "b_doubt": o.in_doubt,
              "b_error": _attempt_error(o.error_code, o.error_message)} for o in batch])

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

    # -- shared rate budget -----------------------------------------------------------------

    def lease_rate_tokens(self, key: str, n: int, *, rate: float, burst: float) -> float:
        """Lease the next `n` tokens of the requests/s budget `key` (`rate` tokens a second).

        Returns the seconds from now until the first token is due; the others follow one every
        1/rate seconds. One atomic UPDATE ... RETURNING moves the budget's "theoretical arrival
        time" n/rate seconds ahead, so concurrent leases get disjoint stretches of it. A budget
        left unused keeps at most `burst` seconds of tokens.
        """
        now = self.clock()
        floor = now - burst
        tat = rate_budgets.c.tat
        stmt = (update(rate_budgets).where(rate_budgets.c.key == key)
                .values(tat=case((tat > floor, tat), else_=floor) + n / rate)
                .returning(tat))
        with self.engine.begin() as conn:
            end = conn.execute(stmt).scalar_one_or_none()
            if end is None:
                conn.execute(self._insert(rate_budgets).values(key=key, tat=floor)
                             .on_conflict_do_nothing(index_elements=["key"]))
                end = conn.execute(stmt).scalar_one()
        return end - n / rate - now

    def hold_rate_budget(self, key: str, seconds: float) -> None:
        """Let no token of the budget `key` fall due for `seconds` from now (a 429)."""
        until = self.clock() + seconds
        tat = rate_budgets.c.tat
        with self.engine.begin() as conn:
            conn.execute(update(rate_budgets).where(rate_budgets.c.key == key)
                         .values(tat=case((tat > until, tat), else_=until)))

    # -- workers ----------------------------------------------------------------------------

    def register_worker(self, worker_id: str, *, host: str, pid: int,
                        job_ids: Sequence[int] | None, lease_seconds: float) -> None:
        """Record a starting worker (and forget workers not seen for a week)."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(workers.delete().where(
                workers.c.heartbeat_at < now - FORGET_WORKERS_AFTER))
            conn.execute(workers.insert().values(
                id=worker_id, host=host, pid=pid, started_at=now, heartbeat_at=now,
                lease_seconds=lease_seconds,
                jobs=None if job_ids is None else json.dumps(sorted(job_ids))))

    def touch_worker(self, worker_id: str) -> None:
        """The worker's heartbeat: it is alive now."""
        with self.engine.begin() as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id)
                         .values(heartbeat_at=self.clock()))

    def stop_worker(self, worker_id: str) -> None:
        """The worker stopped cleanly."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id)
                         .values(heartbeat_at=now, stopped_at=now))

    def list_workers(self) -> list[Worker]:
        """Every worker on record, newest first, with the rows each one holds a lease on."""
        held_stmt = (select(items.c.lease_owner, items.c.status, func.count())
                     .where(items.c.lease_token.is_not(None),
                            items.c.status.in_(("submitting", "pending")))
                     .group_by(items.c.lease_owner, items.c.status))
        with self._read() as conn:
            rows = conn.execute(select(workers).order_by(workers.c.started_at.desc(),
                                                         workers.c.id)).mappings().all()
            held = {(owner, status): n for owner, status, n in conn.execute(held_stmt)}
        return [Worker(
            id=r["id"], host=r["host"], pid=r["pid"], started_at=r["started_at"],
            heartbeat_at=r["heartbeat_at"], stopped_at=r["stopped_at"],
            lease_seconds=r["lease_seconds"],
            job_ids=None if r["jobs"] is None else json.loads(r["jobs"]),
            submitting=held.get((r["id"], "submitting"), 0),
            polling=held.get((r["id"], "pending"), 0)) for r in rows]

    # -- reads ------------------------------------------------------------------------------

    def counts(self, job_id: int) -> dict[str, int]:
        """Rows per state for one job, every state present (zeros included)."""
        return self.counts_of_jobs([job_id])

    def counts_of_jobs(self, job_ids: Sequence[int] | None) -> dict[str, int]:
        """Rows per state summed over these jobs (every job when None), zeros included."""
        stmt = (select(items.c.status, func.count())
                .where(*_job_filter(job_ids)).group_by(items.c.status))
        with self._read() as conn:
            found = {status: n for status, n in conn.execute(stmt)}
        return {status: int(found.get(status, 0)) for status in ALL_STATUSES}

    def has_active_rows(self, job_ids: Sequence[int] | None = None) -> bool:
        """Whether any row is still queued, submitting or pending (work left to do). Indexed
        lookups, job by job, not a count: an idle worker asks this ten times a second."""
        with self._read() as conn:
            return any(self._first_of_jobs(conn, job_ids, select(items.c.id).where(
                items.c.status == status).limit(1)) for status in sorted(ACTIVE_STATUSES))

    def next_due_at(self, job_ids: Sequence[int] | None = None, *,
                    statuses: Sequence[str] = ("queued", "pending", "submitting")
                    ) -> float | None:
        """When the next queued retry, poll or lease expiry (of `statuses`) falls due, or None."""
        filters = _job_filter(job_ids)
        due_column = {"pending": items.c.next_poll_at, "submitting": items.c.lease_until}
        with self._read() as conn:
            found = [conn.execute(select(func.min(due_column[s])).where(
                items.c.status == s, *filters)).scalar_one() for s in statuses if s != "queued"]
            if "queued" in statuses:
                found += self._first_of_jobs(conn, job_ids, select(
                    func.min(items.c.next_attempt_at)).where(items.c.status == "queued"))
        times = [t for t in found if t is not None]
        return min(times) if times else None

    def _first_of_jobs(self, conn: Connection, job_ids: Sequence[int] | None,
                       stmt: Select[Any]) -> list[Any]:
        """`stmt`'s first value in each job (`job_ids`, else every job) that has one: a query
        by state finds its rows through the index that leads with job_id, one job at a time
        (without the job, SQLite would scan that index whole)."""
        ids = self._job_ids(conn) if job_ids is None else job_ids
        found = (conn.execute(stmt.where(items.c.job_id == job_id)).scalar()
                 for job_id in ids)
        return [value for value in found if value is not None]

    def recent_durations(self, job_ids: Sequence[int] | None = None, *, limit: int = 500
                         ) -> dict[str | None, list[float]]:
        """Seconds from submit to result of recently succeeded rows, per model."""
        stmt = (select(items.c.model, items.c.finished_at - items.c.submitted_at)
                .where(items.c.status == "succeeded", items.c.submitted_at.is_not(None),
                       items.c.finished_at.is_not(None), *_job_filter(job_ids))
                .order_by(items.c.finished_at.desc()).limit(limit))
        found: dict[str | None, list[float]] = defaultdict(list)
        with self._read() as conn:
            for model, duration in conn.execute(stmt):
                found[model].append(float(duration))
        return dict(found)

    def iter_items(self, job_id: int, *, statuses: Sequence[str] | None = None,
                   page: int = 2_000) -> Iterator[RowMapping]:
        """Every item of a job in input order, read page by page (keyset pagination)."""
        return self._in_input_order(select(items), job_id, statuses, page)

    def iter_inputs(self, job_id: int, *, statuses: Sequence[str] | None = None,
                    page: int = 5_000) -> Iterator[str]:
        """The input JSON of every item of a job, in input order, page by page (what export
        reads first to plan its columns, without the results)."""
        stmt = select(items.c.id, items.c.row_index, items.c.input)
        return (row["input"] for row in self._in_input_order(stmt, job_id, statuses, page))

    def _in_input_order(self, stmt: Any, job_id: int, statuses: Sequence[str] | None,
                        page: int) -> Iterator[RowMapping]:
        """The rows `stmt` (which selects id and row_index) finds in one job, in input order,
        one page per read transaction (keyset pagination on (row_index, id))."""
        stmt = stmt.where(items.c.job_id == job_id).order_by(items.c.row_index, items.c.id)
        if statuses:
            stmt = stmt.where(items.c.status.in_(list(statuses)))
        last = (-1, -1)
        while True:
            after = or_(items.c.row_index > last[0],
                        and_(items.c.row_index == last[0], items.c.id > last[1]))
            with self._read() as conn:
                rows = conn.execute(stmt.where(after).limit(page)).mappings().all()
            yield from rows
            if len(rows) < page:
                return
            last = (rows[-1]["row_index"], rows[-1]["id"])

    def attempts_of(self, item_id: int) -> list[RowMapping]:
        """The attempt rows of one item, oldest first."""
        stmt = select(attempts).where(attempts.c.item_id == item_id).order_by(attempts.c.number)
        with self._read() as conn:
            return list(conn.execute(stmt).mappings().all())

    def item_by_key(self, job_id: int, row_key: str) -> RowMapping | None:
        """One item by its row key, or None."""
        stmt = select(items).where(items.c.job_id == job_id, items.c.row_key == row_key)
        with self._read() as conn:
            return conn.execute(stmt).mappings().first()

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

    def statuses_of_keys(self, job_id: int, keys: Sequence[str]) -> dict[str, str]:
        """The status of each of `keys` already in the job (absent keys are left out)."""
        found: dict[str, str] = {}
        with self._read() as conn:
            for start in range(0, len(keys), KEY_LOOKUP_CHUNK):
                stmt = select(items.c.row_key, items.c.status).where(
                    items.c.job_id == job_id,
                    items.c.row_key.in_(list(keys[start:start + KEY_LOOKUP_CHUNK])))
                found.update({key: status for key, status in conn.execute(stmt)})
        return found

    # -- reports and operator actions (status, jobs, retry, cancel) ------------------------

    def counts_by_job(self) -> dict[int, dict[str, int]]:
        """Rows per state of every job that has rows, every state present (zeros included)."""
        stmt = (select(items.c.job_id, items.c.status, func.count())
                .group_by(items.c.job_id, items.c.status))
        found: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(ALL_STATUSES, 0))
        with self._read() as conn:
            for job_id, status, n in conn.execute(stmt):
                found[job_id][status] = int(n)
        return dict(found)

    def job_stats(self, job_id: int, *, since: float, top_errors: int = 5) -> JobStats:
        """The totals `status` shows for one job; `finished_since` counts the rows finished at
        or after `since`, and `errors` the `top_errors` most common error codes now on rows."""
        total = func.coalesce
        stmt = select(total(func.sum(items.c.attempts), 0),
                      total(func.sum(items.c.in_doubt_resubmits), 0),
                      total(func.sum(items.c.prompt_tokens), 0),
                      total(func.sum(items.c.completion_tokens), 0),
                      func.min(items.c.submitted_at), func.max(items.c.finished_at),
                      total(func.sum(case((items.c.finished_at >= since, 1), else_=0)), 0),
                      ).where(items.c.job_id == job_id)
        with self._read() as conn:
            row = conn.execute(stmt).one()
        return JobStats(counts=self.counts(job_id), attempts=int(row[0]),
                        in_doubt_resubmits=int(row[1]), prompt_tokens=int(row[2]),
                        completion_tokens=int(row[3]), first_submitted_at=row[4],
                        last_finished_at=row[5], finished_since=int(row[6]),
                        errors=self.error_counts(job_id, limit=top_errors))

    def error_counts(self, job_id: int, *, limit: int = 5) -> list[ErrorCount]:
        """The most common error codes on the job's rows now, each with one of its messages."""
        n = func.count()
        stmt = (select(items.c.error_code, n, func.min(items.c.error_message))
                .where(items.c.job_id == job_id, items.c.error_code.is_not(None))
                .group_by(items.c.error_code).order_by(n.desc(), items.c.error_code)
                .limit(limit))
        with self._read() as conn:
            return [ErrorCount(code, int(count), example)
                    for code, count, example in conn.execute(stmt)]

    def requeue_finished(self, job_id: int, statuses: Sequence[str],
                         codes: Sequence[str] | None = None) -> int:
        """Re-queue the job's rows in `statuses` (with one of `codes`, if given) as they are:
        due now with a renewed attempt budget; their attempt rows stay as history. Rows
        without a request (invalid ones) are left alone."""
        if not statuses:
            return 0
        chosen = [items.c.job_id == job_id, items.c.status.in_(list(statuses)),
                  items.c.request.is_not(None)]
        if codes is not None:
            chosen.append(items.c.error_code.in_(list(codes)))
        stmt = (update(items).where(items.c.id.in_(_locked_ids(*chosen)), *chosen)
                .values(**_requeued(self.clock())))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def requeue_changed(self, changes: Sequence[RequestChange]) -> int:
        """Re-queue terminal rows with a new request each (compare-and-set on their status):
        due now with a renewed attempt budget; their attempt rows stay as history."""
        if not changes:
            return 0
        stmt = (update(items)
                .where(items.c.id == bindparam("b_id"), items.c.status == bindparam("b_status"))
                .values(request=bindparam("b_request"), request_hash=bindparam("b_hash"),
                        model=bindparam("b_model"), **_requeued(self.clock())))
        with self.engine.begin() as conn:
            _lock_items(conn, [c.item_id for c in changes])
            return conn.execute(stmt, [
                {"b_id": c.item_id, "b_status": c.expected_status, "b_request": c.request_json,
                 "b_hash": c.request_hash, "b_model": c.model} for c in changes]).rowcount

    def cancel_items(self, job_id: int, statuses: Sequence[str]) -> int:
        """Cancel the job's rows in `statuses` (queued; submitting and pending too to discard
        tasks in flight). A worker's late outcome for such a row is refused by its
        compare-and-set on the status; the row's open attempt ends `cancelled` (a task id that
        arrives later is still written on it, for the audit trail)."""
        now = self.clock()
        waiting = [s for s in statuses if s not in IN_FLIGHT]
        in_flight = [s for s in statuses if s in IN_FLIGHT]
        with self.engine.begin() as conn:
            done = conn.execute(_cancel(job_id, waiting, now)).rowcount if waiting else 0
            if in_flight:
                rows = conn.execute(_cancel(job_id, in_flight, now)
                                    .returning(items.c.id, items.c.attempts)).all()
                done += len(rows)
                if rows:
                    conn.execute(
                        _attempt_update(outcome="cancelled", finished_at=now)
                        .where(or_(attempts.c.outcome == "sending",
                                   attempts.c.outcome == "created")),
                        [{"b_item": r.id, "b_number": r.attempts} for r in rows])
        return done

    def request_cancel_in_flight(self, job_id: int) -> int:
        """Mark the job's rows in flight as cancelled-when-done: a result is still recorded,
        but a failed or vanished task ends the row `cancelled` instead of retrying it."""
        chosen = [items.c.job_id == job_id, items.c.status.in_(IN_FLIGHT)]
        stmt = (update(items).where(items.c.id.in_(_locked_ids(*chosen)), *chosen)
                .values(error_code=CANCEL_REQUESTED_CODE,
                        error_message="cancelled while in flight: a result is still recorded, "
                                      "a failure is not retried", updated_at=self.clock()))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount


def _job(row: RowMapping) -> Job:
    return Job(id=row["id"], name=row["name"], source=row["source"],
               defaults=json.loads(row["defaults"] or "{}"), created_at=row["created_at"],
               updated_at=row["updated_at"])


def _owned_update(expected_status: str) -> Any:
    """UPDATE items for one claimed row: applies only while status and lease token still match."""
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


def _locked_ids(*where: Any) -> Any:
    """SELECT the ids of the items matching `where`, locked in id order on PostgreSQL (so an
    operator's bulk update never deadlocks with a worker's group commit)."""
    return select(items.c.id).where(*where).order_by(items.c.id).with_for_update()


def _claim_due_in_job(job_id: int, limit: int, now: float, values: dict[str, Any]) -> Any:
    """UPDATE ... RETURNING that claims up to `limit` due queued rows of one job, in order."""
    due = (select(items.c.id)
           .where(items.c.job_id == job_id, items.c.status == "queued",
                  items.c.next_attempt_at <= now)
           .order_by(items.c.next_attempt_at, items.c.row_index)
           .limit(limit).with_for_update(skip_locked=True).cte("due"))
    return (update(items)
            .where(items.c.id == due.c.id, items.c.status == "queued")
            .values(**values)
            .returning(items.c.id, items.c.job_id, items.c.row_key, items.c.request,
                       items.c.request_hash, items.c.model, items.c.attempts,
                       items.c.free_attempts))


def _queued_unless_cancelled() -> Any:
    """The status of a row going back to the queue: `cancelled` instead if the user cancelled
    it while it was in flight (CANCEL_REQUESTED_CODE; the value before this UPDATE)."""
    return case((items.c.error_code == CANCEL_REQUESTED_CODE, "cancelled"), else_="queued")


def _now_if_cancelled(now: float) -> Any:
    return case((items.c.error_code == CANCEL_REQUESTED_CODE, now), else_=items.c.finished_at)


def _cancel(job_id: int, statuses: Sequence[str], now: float) -> Any:
    """UPDATE the job's rows in `statuses` to cancelled (locked in id order first)."""
    chosen = [items.c.job_id == job_id, items.c.status.in_(list(statuses))]
    return (update(items).where(items.c.id.in_(_locked_ids(*chosen)), *chosen)
            .values(status="cancelled", finished_at=now, next_attempt_at=None,
                    next_poll_at=None, lease_owner=None, lease_token=None, lease_until=None,
                    updated_at=now))


def _requeued(now: float) -> dict[str, Any]:
    """The values that put a finished row back in the queue, due now, with a renewed attempt
    budget (every attempt so far becomes free); its attempt rows are left as history."""
    return {"status": "queued", "next_attempt_at": now, "free_attempts": items.c.attempts,
            "error_code": None, "error_message": None, "task_id": None, "result": None,
            "output": None, "finish_reason": None, "result_model": None, "prompt_tokens": None,
            "completion_tokens": None, "total_tokens": None, "finished_at": None,
            "next_poll_at": None, "lease_owner": None, "lease_token": None,
            "lease_until": None, "updated_at": now}


def _case_pending(until: float, current: Any) -> Any:
    return case((items.c.status == "pending", until), else_=current)


def _by_status(batch: Sequence[Requeue | Fail]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = defaultdict(list)
    for outcome in batch:
        groups[outcome.expected_status].append(outcome)
    return groups


def _attempt_error(code: str | None, message: str | None) -> str | None:
    if code is None and message is None:
        return None
    return f"{code}: {message}" if code else message


_APPLIERS: dict[type, Callable[..., int]] = {
    TaskCreated: Repository._apply_created,
    TaskSucceeded: Repository._apply_succeeded,
    PollLater: Repository._apply_poll_later,
    Requeue: Repository._apply_requeue,
    Fail: Repository._apply_fail,
}
