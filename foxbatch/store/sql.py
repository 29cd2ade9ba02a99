"""What the store's groups of queries share: the base class of their mixins, and the SQL
helpers that more than one of them uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, exists, func, select, update

from foxbatch.store.engine import READ_ONLY
from foxbatch.store.tables import attempts, items, jobs

KEY_LOOKUP_CHUNK = 900


class Queries:
    """The base of the query mixins that make up `Repository`: its engine, clock and dialect
    INSERT (set by `Repository.__init__`), and read-only connections."""

    engine: Engine
    clock: Callable[[], float]
    _insert: Callable[..., Any]

    def _read(self) -> Connection:
        return self.engine.connect().execution_options(**READ_ONLY)


def _job_filter(job_ids: Sequence[int] | None) -> list[Any]:
    return [] if job_ids is None else [items.c.job_id.in_(list(job_ids))]


def _job_ids_filter(job_ids: Sequence[int] | None) -> list[Any]:
    """The same filter on the jobs table."""
    return [] if job_ids is None else [jobs.c.id.in_(list(job_ids))]


# Queued rows are found through the index that leads with (job_id, status): the queries below
# run over the jobs table and look into each job's queued rows with one index seek, all in one
# statement (a lookup by state alone would make SQLite scan that index whole).

def _has_queued(due_by: float | None = None) -> Any:
    """For a query over jobs: the job has a queued row (due by `due_by`, if given)."""
    due = [] if due_by is None else [items.c.next_attempt_at <= due_by]
    return exists().where(items.c.job_id == jobs.c.id, items.c.status == "queued", *due)


def _first_queued_due() -> Any:
    """For a query over jobs: when the job's first queued row falls due."""
    return (select(func.min(items.c.next_attempt_at))
            .where(items.c.job_id == jobs.c.id, items.c.status == "queued")
            .scalar_subquery())


def _lock_items(conn: Connection, item_ids: Sequence[int]) -> None:
    """PostgreSQL: lock these items in id order before changing them, so that what this
    transaction checks (ownership) cannot change before it writes, and two transactions that
    both wait for locks never deadlock. SQLite's BEGIN IMMEDIATE already serialises writers."""
    if conn.dialect.name != "postgresql" or not item_ids:
        return
    conn.execute(select(items.c.id).where(items.c.id.in_(sorted(set(item_ids))))
                 .order_by(items.c.id).with_for_update())


def _attempt_update(**values: Any) -> Any:
    return (update(attempts)
            .where(attempts.c.item_id == bindparam("b_item"),
                   attempts.c.number == bindparam("b_number"))
            .values(**values))
