"""Workers on record and the shared requests/s budget they draw from."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import case, func, select, update

from foxbatch.store.records import Worker
from foxbatch.store.sql import Queries
from foxbatch.store.tables import items, rate_budgets, workers

# Rows of workers whose last sign of life is older than this are deleted when a worker starts.
FORGET_WORKERS_AFTER = 7 * 24 * 3600.0


class WorkerQueries(Queries):
    """The workers table and the rate budgets."""

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
