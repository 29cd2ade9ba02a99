"""When to look at a pending task again: adaptive polling, learned per model.

FoxAPI documents no polling interval; third-party pollers use a fixed 5 s. foxbatch instead:
- looks first at a per-model delay that a feedback loop keeps near the low end of observed task
  durations (a first look that finds the task done shortens it, one that does not lengthens it),
  so that few tasks are ready long before their first look;
- when a task is still running and reports progress, looks again when that progress says it
  will be done (one more look for most tasks);
- without usable progress, widens the interval with the task's age (25% of it, at least
  `min_interval`, jittered, capped), so each result is recorded within about a quarter of its
  duration of becoming ready.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_FIRST = 0.5
FIRST_FLOOR = 0.02
SHORTEN = 0.85
SHORTEN_FAST = 0.5
ALMOST_ALL = 0.9
LENGTHEN = 1.15
TARGET_HITS = (0.15, 0.35)  # the share of first looks that should find the task done
FEEDBACK_EVERY = 0.5
FEEDBACK_MIN_LOOKS = 4
LOW_QUANTILE_OF_PROGRESS = 0.6
EMPTY_RESULT_DELAY = 0.5


@dataclass
class _ModelTiming:
    first_delay: float
    looks: int = 0
    hits: int = 0
    adjusted_at: float = float("-inf")


@dataclass
class PollPlanner:
    """Per-model poll timing; pure arithmetic, no I/O."""

    default_first: float = DEFAULT_FIRST
    min_interval: float = 1.0
    max_interval: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    _models: dict[str, _ModelTiming] = field(default_factory=dict)

    def seed(self, model: str | None, durations: Iterable[float]) -> None:
        """Start from durations seen in earlier runs (seconds from submit to result)."""
        values = sorted(d for d in durations if d > 0)
        if len(values) >= 5:
            low = statistics.quantiles(values, n=5)[0]  # the 20th percentile
            self._timing(model).first_delay = max(FIRST_FLOOR, low)

    def first_poll_at(self, model: str | None, sent_at: float) -> float:
        """When to look at a task submitted at `sent_at` for the first time."""
        return sent_at + self._timing(model).first_delay

    def observe_first_poll(self, model: str | None, *, done: bool, now: float) -> None:
        """Feedback from a first look. At most every FEEDBACK_EVERY seconds, the share of first
        looks that found the task done moves the first delay: above TARGET_HITS shortens it,
        below lengthens it, by a bounded step, so a whole batch of first looks that come back
        at once moves it one step, not one step per look."""
        timing = self._timing(model)
        timing.looks += 1
        timing.hits += done
        if now - timing.adjusted_at < FEEDBACK_EVERY or timing.looks < FEEDBACK_MIN_LOOKS:
            return
        share = timing.hits / timing.looks
        if share > TARGET_HITS[1]:
            # Nearly every task done at its first look: the look is far too late, halve it.
            timing.first_delay *= SHORTEN_FAST if share >= ALMOST_ALL else SHORTEN
        elif share < TARGET_HITS[0]:
            timing.first_delay *= LENGTHEN
        timing.first_delay = min(self.max_interval, max(FIRST_FLOOR, timing.first_delay))
        timing.looks = timing.hits = 0
        timing.adjusted_at = now

    def observe_progress(self, model: str | None, predicted_duration: float) -> None:
        """A running task predicts its own duration: move the first delay a tenth of the way
        towards the low end of such predictions, up or down (faster than first-look
        feedback alone)."""
        timing = self._timing(model)
        target = LOW_QUANTILE_OF_PROGRESS * predicted_duration
        timing.first_delay += 0.1 * (target - timing.first_delay)
        timing.first_delay = min(self.max_interval, max(FIRST_FLOOR, timing.first_delay))

    def next_poll_at(self, model: str | None, *, sent_at: float | None, now: float,
                     progress: float | None) -> float:
        """When to look again at a task that was not finished at `now`."""
        if sent_at is None:
            sent_at = now
        age = max(0.0, now - sent_at)
        if progress is not None and 0 < progress < 100 and age > 0:
            predicted = age * 100.0 / progress
            self.observe_progress(model, predicted)
            due = sent_at + predicted * 1.02 + FIRST_FLOOR
            return min(now + self.max_interval, max(now + FIRST_FLOOR, due))
        step = max(self.min_interval, 0.25 * age) * self.rng.uniform(0.8, 1.0)
        return now + min(self.max_interval, step)

    @staticmethod
    def empty_result_poll_at(now: float) -> float:
        """`completed` without results: look again shortly (foxapi.md §3)."""
        return now + EMPTY_RESULT_DELAY

    def _timing(self, model: str | None) -> _ModelTiming:
        key = model or ""
        if key not in self._models:
            self._models[key] = _ModelTiming(self.default_first)
        return self._models[key]
