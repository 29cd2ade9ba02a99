"""The requests/s budget shared through the store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from foxbatch.budget import StoreTokenSource, budget_key
from foxbatch.ratelimit import BURST_SECONDS, Limiter
from foxbatch.recorder import StoreThread
from foxbatch.store import Repository, open_store
from tests.integration.test_repository import Clock
from tests.unit.test_shared_tokens import take_for


@pytest.fixture
def clocked(db_url):
    clock = Clock()
    repo = Repository(open_store(db_url).engine, clock=clock)
    yield repo, clock
    repo.engine.dispose()


def test_leases_follow_one_another_on_the_budgets_timeline(clocked):
    repo, clock = clocked
    first = repo.lease_rate_tokens("k", 5, rate=10, burst=BURST_SECONDS)
    second = repo.lease_rate_tokens("k", 5, rate=10, burst=BURST_SECONDS)
    other_key = repo.lease_rate_tokens("other", 5, rate=10, burst=BURST_SECONDS)
    assert first == pytest.approx(-BURST_SECONDS) == other_key
    assert second == pytest.approx(first + 0.5)
    clock.now += 100  # an idle budget keeps no more than the burst
    assert repo.lease_rate_tokens("k", 5, rate=10, burst=BURST_SECONDS) == pytest.approx(
        -BURST_SECONDS)


def test_a_hold_pauses_the_whole_budget(clocked):
    repo, clock = clocked
    repo.lease_rate_tokens("k", 5, rate=10, burst=BURST_SECONDS)
    repo.hold_rate_budget("k", 3.0)
    assert repo.lease_rate_tokens("k", 5, rate=10, burst=BURST_SECONDS) == pytest.approx(3.0)
    repo.hold_rate_budget("k", 1.0)  # a shorter hold does not shorten a longer one
    assert repo.lease_rate_tokens("k", 5, rate=10, burst=BURST_SECONDS) == pytest.approx(3.5)


def test_concurrent_leases_never_overlap(clocked):
    repo, _ = clocked  # the clock stands still: every lease must start where the last ended

    def lease_many(_: int) -> list[float]:
        return [repo.lease_rate_tokens("k", 3, rate=10, burst=0.0) for _ in range(25)]

    with ThreadPoolExecutor(4) as pool:
        starts = sorted(s for found in pool.map(lease_many, range(4)) for s in found)
    assert starts == pytest.approx([0.3 * i for i in range(100)])


def test_the_budget_key_is_a_fingerprint_not_the_key():
    key = budget_key("https://api.foxapi.cc", "sk-secret")
    assert "secret" not in key and len(key) == 32
    assert key == budget_key("https://api.foxapi.cc/", "sk-secret")
    assert key != budget_key("https://api.foxapi.cc", "sk-other")


async def test_two_processes_share_one_budget_through_the_store(db_url):
    repos = [open_store(db_url) for _ in range(2)]
    threads = [StoreThread(repo) for repo in repos]
    limiters = [Limiter(8, rps=30, tokens=StoreTokenSource(db, "k", 30)) for db in threads]
    start = time.monotonic()
    counts = await asyncio.gather(*(take_for(limiter, 1.0) for limiter in limiters))
    elapsed = time.monotonic() - start
    for db, repo in zip(threads, repos, strict=True):
        db.close()
        repo.engine.dispose()
    assert all(count >= 5 for count in counts)
    assert sum(counts) <= 30 * (elapsed + 2 * BURST_SECONDS) + 2
