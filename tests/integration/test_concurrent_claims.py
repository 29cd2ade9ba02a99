"""Two processes claiming from one store never get the same row (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing as mp
import time

from foxbatch.store import open_store
from tests.integration.test_repository import seeded

ROWS = 600


def claim_all(url: str, owner: str, start: mp.Barrier, out: mp.Queue) -> None:
    repo = open_store(url)
    mine: list[int] = []
    start.wait(timeout=60)
    while claims := repo.claim_queued(owner, 7, lease_seconds=60):
        mine.extend(c.item_id for c in claims)
        time.sleep(0.002)  # a worker sends what it claimed: the other gets its turn at the lock
    out.put(mine)
    repo.engine.dispose()


def test_two_processes_never_claim_the_same_row(db_url):
    repo = open_store(db_url)
    seeded(repo, ROWS)
    repo.engine.dispose()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=claim_all, args=(db_url, f"w{i}", start, out))
             for i in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    first, second = (set(r) for r in results)
    assert not first & second
    assert len(first) + len(second) == ROWS
    assert first and second, "both workers should have claimed something"
