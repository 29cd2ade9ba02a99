"""One limiter per process, shared by submits and polls.

Three limits: requests in flight (`concurrency`), requests per second (a GCRA token bucket), and
after a 429 one shared pause for everyone (Retry-After honoured, capped) followed by a lower rate
that recovers slowly (AIMD: halve on 429, then add a little per second of success). The result
is one coordinated slowdown instead of a storm of independent retries.

When several processes share one requests/s budget (one API key, many workers), the limiter
also takes a token from a `TokenSource` for every request. It leases them a batch at a time
(a quarter second's worth), each token due at its own moment, so the shared budget costs one
round trip per batch, not per request; a 429 pauses the whole budget, so every process sharing
it pauses too. Without a source nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

DEFAULT_PAUSE = 1.0
DECREASE_FACTOR = 0.7
DECREASE_SPACING = 2.0
MAX_PAUSE = 60.0
MIN_RATE = 0.5
MIN_MEASURED_RATE = 4.0
BURST_SECONDS = 0.05
# A shared token is taken at most BURST_SECONDS before its turn and dropped unused once it is
# LATE_SECONDS past it, so that no process can hoard tokens and spend them in a burst.
LATE_SECONDS = 0.05
TOKEN_BATCH_SECONDS = 0.25


@dataclass(frozen=True)
class TokenGrant:
    """Tokens leased from a TokenSource: `count` of them, the first due `wait` seconds after the
    lease (negative: already due), then one every `spacing` seconds."""

    wait: float
    count: int
    spacing: float


class TokenSource(Protocol):
    """A requests/s budget shared with other processes (e.g. through the task store)."""

    async def lease(self, n: int) -> TokenGrant:
        """Lease the next `n` tokens of the budget."""
        ...

    async def hold(self, seconds: float) -> None:
        """Let no token of the budget fall due for `seconds` (the API said 429)."""
        ...


class Limiter:
    """Concurrency cap + requests/s + shared 429 back-off (AIMD)."""

    def __init__(self, concurrency: int, rps: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, max_pause: float = MAX_PAUSE,
                 tokens: TokenSource | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if tokens is not None and rps is None:
            raise ValueError("a shared token source needs rps")
        self.concurrency = concurrency
        self.ceiling = rps
        self.rate: float | None = rps
        self.max_pause = max_pause
        self.rate_limited = 0
        self._clock = clock
        self._in_flight = 0
        self._tat = 0.0  # GCRA "theoretical arrival time"
        self._paused_until = 0.0
        self._last_decrease = -1e9
        self._last_increase = clock()
        self._recent = _RateMeter(clock)
        self._lock = asyncio.Lock()
        self._slot_free = asyncio.Event()
        self._shared = (None if tokens is None or rps is None else
                        _LeasedTokens(tokens, max(1, math.ceil(rps * TOKEN_BATCH_SECONDS)), clock))

    @property
    def in_flight(self) -> int:
        """Requests currently holding a slot."""
        return self._in_flight

    @property
    def paused_for(self) -> float:
        """Seconds left in the current 429 pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self, n: int = 1, *, linger: float = 0.0) -> int:
        """Wait for at least one permit, then take up to `n` of those free.

        With `linger`, wait up to that long for more slots to free up before taking them, so
        that a caller working in batches does not take one permit at a time.
        A permit is one in-flight slot and one rate token; give slots back with `release`.
        """
        async with self._lock:  # FIFO: waiters are served in arrival order
            while True:
                now = self._clock()
                delay = max(self._paused_until - now, self._rate_delay(now))
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                if self._in_flight >= self.concurrency:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                if self._shared is not None and (wait := await self._shared.wait()) > 0:
                    await asyncio.sleep(wait)
                    continue
                if linger > 0 and self.concurrency - self._in_flight < self._worth_taking(n):
                    await asyncio.sleep(linger)
                taken = self._take(self._clock(), n)
                if taken:
                    return taken

    def _worth_taking(self, n: int) -> int:
        """Free slots enough for a batch of at most `n` to go without lingering: a quarter
        of what could be free at all. Lingering holds every other caller back, so waiting
        for all `n` would leave slots idle (requests end within a millisecond on a fast
        API) longer than the extra claims it saves cost."""
        return max(1, min(n, self.concurrency) // 4)

    def release(self, n: int = 1, *, refund: bool = False) -> None:
        """Give back `n` in-flight slots; with `refund`, their rate tokens too (never used)."""
        if n <= 0:
            return
        self._in_flight -= n
        if refund and self.rate is not None:
            self._tat -= n / self.rate
        if refund and self._shared is not None:
            self._shared.give_back(n)
        self._slot_free.set()

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` (e.g. while the server cannot be reached)."""
        self._paused_until = max(self._paused_until, self._clock() + min(seconds, self.max_pause))

    def on_success(self) -> None:
        """Additive increase: after a 429, the rate climbs back a little each second."""
        if self.rate is None:
            return
        now = self._clock()
        elapsed, self._last_increase = now - self._last_increase, now
        step = max(1.0, 0.05 * self.rate) * min(elapsed, 1.0)
        self.rate += step
        if self.ceiling is not None:
            self.rate = min(self.rate, self.ceiling)

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: everyone pauses (Retry-After if given, capped); the rate drops to 70% at
        most once per pause (and per DECREASE_SPACING seconds), however many requests in
        flight come back with 429, so that a few stray 429s do not collapse the rate."""
        now = self._clock()
        self.rate_limited += 1
        pause = min(self.max_pause, retry_after if retry_after is not None else DEFAULT_PAUSE)
        if self._shared is not None and self._paused_until <= now:
            self._shared.hold(pause)  # a new pause: the other processes of this key pause too
        self._paused_until = max(self._paused_until, now + pause)
        if now - self._last_decrease < max(pause, DECREASE_SPACING):
            return
        self._last_decrease = now
        current = self.rate if self.rate is not None else self._recent.rate()
        if self.rate is None and current < MIN_MEASURED_RATE:
            return  # too little traffic to learn a rate from: the pause alone must do
        self.rate = max(MIN_RATE, current * DECREASE_FACTOR)
        self._last_increase = now + pause
        log.warning("FoxAPI rate limit (429): pausing %.1fs, then at most %.1f requests/s",
                    pause, self.rate)

    def _rate_delay(self, now: float) -> float:
        if self.rate is None:
            return 0.0
        return max(0.0, self._tat - BURST_SECONDS - now)

    def _take(self, now: float, n: int) -> int:
        taken = 0
        while taken < n and self._in_flight < self.concurrency:
            if taken and self._rate_delay(now) > 0:
                break
            if self._shared is not None and not self._shared.take(now):
                break
            if self.rate is not None:
                self._tat = max(self._tat, now) + 1.0 / self.rate
            self._in_flight += 1
            taken += 1
        self._recent.add(now, taken)
        return taken


class _LeasedTokens:
    """Shared tokens leased a batch at a time; the next one is due at `_next_at` (clock time),
    the others follow one every `_spacing` seconds."""

    def __init__(self, source: TokenSource, batch: int, clock: Callable[[], float]):
        self._source = source
        self._batch = batch
        self._clock = clock
        self._next_at = 0.0
        self._left = 0
        self._spacing = 0.0
        self._taken = 0  # taken from the current batch since the last drop: can be given back
        self._holds: set[asyncio.Task[None]] = set()

    async def wait(self) -> float:
        """Seconds until a token may be taken, leasing a new batch first if none is left."""
        self._drop_stale(self._clock())
        if not self._left:
            grant = await self._source.lease(self._batch)
            self._next_at = self._clock() + grant.wait
            self._left, self._spacing, self._taken = grant.count, grant.spacing, 0
        return self._next_at - BURST_SECONDS - self._clock()

    def take(self, now: float) -> bool:
        """Take the next token if it is due (within BURST_SECONDS)."""
        self._drop_stale(now)
        if not self._left or self._next_at - BURST_SECONDS > now:
            return False
        self._left -= 1
        self._taken += 1
        self._next_at += self._spacing
        return True

    def hold(self, seconds: float) -> None:
        """Pause the shared budget for `seconds`, in the background; drop the tokens in hand."""
        self._left = self._taken = 0
        task = asyncio.get_running_loop().create_task(self._source.hold(seconds))
        self._holds.add(task)
        task.add_done_callback(self._hold_done)

    def _hold_done(self, task: asyncio.Task[None]) -> None:
        self._holds.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not pause the shared rate budget: %s", task.exception())

    def give_back(self, n: int) -> None:
        """Return up to `n` tokens taken but not used (their turns come round again)."""
        n = min(n, self._taken)
        self._left += n
        self._taken -= n
        self._next_at -= n * self._spacing

    def _drop_stale(self, now: float) -> None:
        if not self._left or self._next_at >= now - LATE_SECONDS:
            return
        behind = now - LATE_SECONDS - self._next_at
        stale = min(self._left, math.floor(behind / self._spacing) + 1)
        self._left -= stale
        self._next_at += stale * self._spacing
        self._taken = 0


class _RateMeter:
    """Requests per second over the last couple of seconds (amortised O(1) per request)."""

    def __init__(self, clock: Callable[[], float], window: float = 2.0):
        self._clock = clock
        self._window = window
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, now: float, n: int) -> None:
        self._events.append((now, n))
        self._total += n
        self._forget_before(now - self._window)

    def rate(self) -> float:
        self._forget_before(self._clock() - self._window)
        return self._total / self._window

    def _forget_before(self, cutoff: float) -> None:
        while self._events and self._events[0][0] < cutoff:
            self._total -= self._events.popleft()[1]
