"""Reads, reports and operator actions: what status, jobs, export, retry and cancel see and do."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    RowMapping,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)

from foxbatch.models import ALL_STATUSES, CANCEL_REQUESTED_CODE
from foxbatch.store.records import ErrorCount, JobStats, RequestChange
from foxbatch.store.sql import (
    KEY_LOOKUP_CHUNK,
    Queries,
    _attempt_update,
    _first_queued_due,
    _has_queued,
    _job_filter,
    _job_ids_filter,
    _lock_items,
)
from foxbatch.store.tables import attempts, items, jobs

# States of a row whose task may exist at FoxAPI right now.
IN_FLIGHT = ("submitting", "pending")


# The share of a model's recent tasks that must have shown progress for a run to start from
# their durations (see recent_durations).
SEED_COVERAGE = 0.95


class ReportQueries(Queries):
    """Reads of the rows and their attempts, the reports built on them, and operator writes."""

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
        lookups, not a count: an idle worker asks this ten times a second."""
        lookups = [select(jobs.c.id).where(_has_queued(), *_job_ids_filter(job_ids)).limit(1)]
        lookups += [select(items.c.id).where(items.c.status == status, *_job_filter(job_ids))
                    .limit(1) for status in IN_FLIGHT]
        with self._read() as conn:
            return any(conn.execute(stmt).first() is not None for stmt in lookups)

    def next_due_at(self, job_ids: Sequence[int] | None = None, *,
                    statuses: Sequence[str] = ("queued", "pending", "submitting")
                    ) -> float | None:
        """When the next queued retry, poll or lease expiry (of `statuses`) falls due, or None."""
        due_column = {"pending": items.c.next_poll_at, "submitting": items.c.lease_until}
        queries = [select(func.min(due_column[s])).where(items.c.status == s,
                                                         *_job_filter(job_ids))
                   for s in statuses if s != "queued"]
        if "queued" in statuses:
            queries.append(select(func.min(_first_queued_due())).where(
                *_job_ids_filter(job_ids)))
        with self._read() as conn:
            found = [conn.execute(q).scalar_one() for q in queries]
        times = [t for t in found if t is not None]
        return min(times) if times else None

    def recent_durations(self, job_ids: Sequence[int] | None = None, *, limit: int = 500,
                         coverage: float = SEED_COVERAGE) -> dict[str | None, list[float]]:
        """Durations of the tasks of recently succeeded rows, per model: the shortest each
        task's progress allowed at its last look (seconds).

        Only for models where at least `coverage` of those rows showed progress. A task done
        at its first look shows none, and its time from submit to result is only an upper
        bound; where many were, the rest are the slow end of the model's tasks, and a run
        that started from them would look at the fast ones too late.

        "Recent" by submit, not by result: the last results of a batch are its slowest tasks,
        and a run that started from those would look too late at all the others."""
        stmt = (select(items.c.model, items.c.least_duration)
                .where(items.c.status == "succeeded", *_job_filter(job_ids))
                .order_by(items.c.submitted_at.desc()).limit(limit))
        found: dict[str | None, list[float | None]] = defaultdict(list)
        with self._read() as conn:
            for model, duration in conn.execute(stmt):
                found[model].append(duration)
        return {model: [float(d) for d in seen if d is not None]
                for model, seen in found.items()
                if sum(d is not None for d in seen) >= coverage * len(seen)}

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


def _locked_ids(*where: Any) -> Any:
    """SELECT the ids of the items matching `where`, locked in id order on PostgreSQL (so an
    operator's bulk update never deadlocks with a worker's group commit)."""
    return select(items.c.id).where(*where).order_by(items.c.id).with_for_update()


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
