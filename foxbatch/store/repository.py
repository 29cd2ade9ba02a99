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
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    Engine,
    RowMapping,
    case,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from foxbatch.errors import UnknownJobError
from foxbatch.store.claims import ClaimQueries, new_token
from foxbatch.store.ingesting import COMMIT_ROWS, INSERT_CHUNK, NEW_ITEM_COLUMNS, IngestQueries
from foxbatch.store.records import (
    Job,
    Worker,
)
from foxbatch.store.reports import IN_FLIGHT, ReportQueries
from foxbatch.store.sql import KEY_LOOKUP_CHUNK
from foxbatch.store.tables import items, jobs, rate_budgets, workers

__all__ = ["COMMIT_ROWS", "FORGET_WORKERS_AFTER", "INSERT_CHUNK", "IN_FLIGHT", "KEY_LOOKUP_CHUNK",
           "NEW_ITEM_COLUMNS", "Repository", "new_token"]

# Rows of workers whose last sign of life is older than this are deleted when a worker starts.
FORGET_WORKERS_AFTER = 7 * 24 * 3600.0


class Repository(IngestQueries, ClaimQueries, ReportQueries):
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


def _job(row: RowMapping) -> Job:
    return Job(id=row["id"], name=row["name"], source=row["source"],
               defaults=json.loads(row["defaults"] or "{}"), created_at=row["created_at"],
               updated_at=row["updated_at"])
