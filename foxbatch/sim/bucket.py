"""A token bucket: the simulator's real requests-per-second limit."""

from __future__ import annotations

import math


class TokenBucket:
    """Admit at most `rate` requests a second, with a burst of one second's worth."""

    def __init__(self, rate: float, now: float):
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._last = now

    def take(self, now: float) -> int:
        """Take a token and return 0, or return the whole seconds (>= 1) until one is free."""
        elapsed = max(0.0, now - self._last)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._last = max(self._last, now)
        if self._tokens >= 1:
            self._tokens -= 1
            return 0
        return max(1, math.ceil((1 - self._tokens) / self._rate))
