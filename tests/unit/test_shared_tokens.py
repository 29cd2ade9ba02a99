"""The Limiter's seam for a shared requests/s budget: tokens from a TokenSource, in batches."""

from __future__ import annotations

import asyncio
import time

import pytest

from foxbatch.ratelimit import BURST_SECONDS, Limiter, TokenGrant


class Budget:
    """A requests/s budget shared by several limiters, kept as the store keeps it (GCRA)."""

    def __init__(self, rate: float):
        self.rate = rate
        self.tat = 0.0
        self.leases = 0

    async def lease(self, n: int) -> TokenGrant:
        now = time.monotonic()
        start = max(self.tat, now - BURST_SECONDS)
        self.tat = start + n / self.rate
        self.leases += 1
        return TokenGrant(wait=start - now, count=n, spacing=1 / self.rate)

    async def hold(self, seconds: float) -> None:
        self.tat = max(self.tat, time.monotonic() + seconds)


async def take_for(limiter: Limiter, seconds: float) -> int:
    """Take one permit at a time for `seconds`, sending nothing; return how many were taken."""
    taken = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        taken += await limiter.acquire()
        limiter.release()
    return taken


async def test_limiters_sharing_a_budget_stay_within_it_together():
    budget = Budget(rate=40)
    limiters = [Limiter(concurrency=8, rps=40, tokens=budget) for _ in range(3)]
    counts = await asyncio.gather(*(take_for(limiter, 0.75) for limiter in limiters))
    # One limiter alone would take ~30 in 0.75 s; three together take the same budget.
    assert 20 <= sum(counts) <= 40 * (0.75 + 2 * BURST_SECONDS) + 3
    assert all(count > 0 for count in counts)
    assert budget.leases <= sum(counts) / 10 + 3 * 2  # batches of 10 (a quarter second)


async def test_tokens_given_back_are_used_again_without_a_new_lease():
    budget = Budget(rate=20)
    limiter = Limiter(concurrency=8, rps=20, tokens=budget)
    taken = await limiter.acquire(1)
    limiter.release(taken, refund=True)
    await limiter.acquire(1)
    assert budget.leases == 1


async def test_tokens_left_unused_past_their_turn_are_dropped():
    budget = Budget(rate=100)
    limiter = Limiter(concurrency=100, rps=100, tokens=budget)
    await limiter.acquire(1)
    await asyncio.sleep(0.4)  # the rest of the batch (a quarter second's worth) goes stale
    start = time.monotonic()
    assert await limiter.acquire(100) <= 100 * 2 * BURST_SECONDS + 1  # no burst of old tokens
    assert budget.leases == 2
    assert time.monotonic() - start < 0.1


async def test_a_429_in_one_process_pauses_the_others_sharing_the_budget():
    budget = Budget(rate=20)
    seen, other = (Limiter(concurrency=8, rps=20, tokens=budget) for _ in range(2))
    seen.on_rate_limited(0.4)
    await asyncio.sleep(0)  # the hold goes to the budget in the background
    start = time.monotonic()
    await other.acquire()
    assert time.monotonic() - start >= 0.4 - BURST_SECONDS - 0.01


def test_a_shared_budget_needs_a_rate():
    with pytest.raises(ValueError):
        Limiter(concurrency=1, tokens=Budget(rate=1))
