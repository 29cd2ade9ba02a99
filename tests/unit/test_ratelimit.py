"""The shared limiter: concurrency cap, requests/s, one pause for everyone on 429, AIMD."""

from __future__ import annotations

import asyncio
import time

import pytest

from foxbatch.ratelimit import MIN_RATE, Limiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_concurrency_cap_is_never_exceeded():
    limiter = Limiter(concurrency=3)
    peak = 0

    async def request() -> None:
        nonlocal peak
        await limiter.acquire()
        peak = max(peak, limiter.in_flight)
        await asyncio.sleep(0.01)
        limiter.release()

    await asyncio.gather(*(request() for _ in range(20)))
    assert peak == 3 and limiter.in_flight == 0


async def test_a_batch_lingers_only_while_few_slots_are_free():
    """Lingering holds every other caller back: with a quarter of the slots free a batch goes
    at once; with fewer it waits (up to `linger`) for more to free up."""
    limiter = Limiter(concurrency=8)
    assert await limiter.acquire(6) == 6
    started = time.monotonic()
    assert await limiter.acquire(256, linger=5.0) == 2  # 2 of 8 free: no waiting
    assert time.monotonic() - started < 1.0
    limiter.release(1)
    asyncio.get_running_loop().call_later(0.1, limiter.release, 3)
    started = time.monotonic()
    assert await limiter.acquire(256, linger=0.3) == 4  # 1 free: waits, takes those freed
    assert 0.25 <= time.monotonic() - started < 2.0


async def test_acquire_takes_up_to_n_free_permits():
    limiter = Limiter(concurrency=5)
    assert await limiter.acquire(3) == 3
    assert await limiter.acquire(10) == 2
    limiter.release(5)
    assert limiter.in_flight == 0


async def test_requests_per_second_are_paced():
    limiter = Limiter(concurrency=100, rps=50)
    start = time.monotonic()
    for _ in range(26):
        await limiter.acquire()
        limiter.release()
    assert time.monotonic() - start >= 0.4  # 25 intervals of 20 ms, less a small burst


async def test_refunded_permits_give_their_rate_tokens_back():
    limiter = Limiter(concurrency=100, rps=10)
    taken = await limiter.acquire(1)
    limiter.release(taken, refund=True)
    start = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - start < 0.05


async def test_a_429_pauses_everyone_for_retry_after():
    limiter = Limiter(concurrency=10)
    limiter.on_rate_limited(0.3)
    assert limiter.paused_for > 0.2
    start = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(5)))
    assert time.monotonic() - start >= 0.25


def test_retry_after_is_capped():
    limiter = Limiter(concurrency=1, max_pause=5)
    limiter.on_rate_limited(3600)
    assert limiter.paused_for <= 5


def test_rate_drops_once_per_pause_then_recovers_slowly():
    clock = Clock()
    limiter = Limiter(concurrency=10, rps=100, clock=clock)
    for _ in range(20):  # a burst of 429s from requests that were all in flight
        limiter.on_rate_limited(1.0)
    assert limiter.rate == pytest.approx(70)
    clock.now += 2.0
    limiter.on_success()
    clock.now += 1.0
    limiter.on_success()
    assert 70 < limiter.rate <= 80
    for _ in range(200):
        clock.now += 1.0
        limiter.on_success()
    assert limiter.rate == 100  # never above the configured ceiling


def test_rate_never_drops_below_the_floor():
    clock = Clock()
    limiter = Limiter(concurrency=1, rps=1, clock=clock)
    for _ in range(10):
        clock.now += 5
        limiter.on_rate_limited(None)
    assert limiter.rate == MIN_RATE


def test_concurrency_must_be_positive():
    with pytest.raises(ValueError):
        Limiter(concurrency=0)
