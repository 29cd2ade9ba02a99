"""The repository: every SQL statement foxbatch runs, behind one class.

`Repository` is made of one mixin per concern, each in its own module: jobs (here), ingest
(`ingesting`), claims, outcomes and leases (`claims`), reads, reports and operator actions
(`reports`), workers and the shared rate budget (`workers`), over the base class and SQL helpers
they share (`sql`).

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
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, RowMapping, select
from sqlalchemy.dialects import postgresql, sqlite

from foxbatch.errors import UnknownJobError
from foxbatch.store.claims import ClaimQueries, new_token
from foxbatch.store.ingesting import COMMIT_ROWS, INSERT_CHUNK, NEW_ITEM_COLUMNS, IngestQueries
from foxbatch.store.records import Job
from foxbatch.store.reports import IN_FLIGHT, ReportQueries
from foxbatch.store.sql import KEY_LOOKUP_CHUNK
from foxbatch.store.tables import jobs
from foxbatch.store.workers import FORGET_WORKERS_AFTER, WorkerQueries

__all__ = ["COMMIT_ROWS", "FORGET_WORKERS_AFTER", "INSERT_CHUNK", "IN_FLIGHT", "KEY_LOOKUP_CHUNK",
           "NEW_ITEM_COLUMNS", "Repository", "new_token"]


class Repository(IngestQueries, ClaimQueries, ReportQueries, WorkerQueries):
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


def _job(row: RowMapping) -> Job:
    return Job(id=row["id"], name=row["name"], source=row["source"],
               defaults=json.loads(row["defaults"] or "{}"), created_at=row["created_at"],
               updated_at=row["updated_at"])
