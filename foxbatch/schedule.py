"""When to look at a pending task again: adaptive polling, learned per model.

FoxAPI documents no polling interval; third-party pollers use a fixed 5 s. foxbatch aims to
record each result within `allowed_delay(d)` = max(min_interval, 25% of d) of the task (of
duration d) becoming ready, with as few GETs as that allows:

- A task's first look comes `first_delay` after its submit. With nothing learned yet that is
  SAFETY x min_interval, too early to be late for any task. Once the model's durations are
  known, it is their low end plus the delay allowed there: a first look that finds a task done
  was then not late for it, and most tasks are still running at it.
- The low end is the smaller of the shortest duration seen and the 0.02% quantile of a
  lognormal fitted to the recent durations (LLM task durations are close to lognormal), so a few
  dozen samples already reach below the shortest task of a thousand. The samples are what
  running tasks predict from their progress, so they keep coming while first looks are early.
- A running task reports progress: the next look comes when that progress says the task will
  be done (the end of what the whole percentage allows), so one more look finds it done.
- Without usable progress (still pending) the interval grows with the task's age: the delay
  allowed at that age, jittered, capped.
- A first look that falls due when the learned first delay puts it later (it was planned
  before that was learned: typically a batch submitted at once into a fresh store) is moved,
  without a GET (`first_look_due`): the batch is probed by the tasks polled first, and the
  others wait for what those reveal.
- If more first looks find the task done than the fitted durations predict (a model faster
  than its history: tasks done at their first look teach nothing, so the fit lags), the first
  delay shrinks step by step until they agree again.
- If nearly every first look finds the task done (tasks far shorter than a second), looking
  sooner costs no GET and finishes the job sooner: the first delay halves until that stops.
- When the first delay has become clearly shorter than the longest one handed out since
  (`shortened_first_delay`), the first looks still planned with the longer one are brought
  forward (by the poller, in the store): a batch submitted at once into a fresh store does not
  wait out the default first delay for tasks that are long done.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

# The share of the allowed delay a look is planned into: the rest covers the GET, the group
# commit and clock jitter.
SAFETY = 0.8
DEFAULT_MIN_INTERVAL = 1.0
SLACK_SHARE = 0.25
FIRST_FLOOR = 0.02
MIN_SAMPLES = 16
WINDOW = 512
# The low end of the durations: this many standard deviations below the mean of their logs
# (the 0.02% quantile of a lognormal; more than the 0.1% a thousand tasks need, because the
# samples miss the tasks done before their first look, which narrows the fit).
LOW_END_SIGMAS = 3.5
REFIT_EVERY = 8
# First-look guard: shrink when the share of first looks that find the task done exceeds what
# the fit predicts by this much; undo a step when it is within a third of that.
EXCESS_DONE_AT_FIRST_LOOK = 0.15
SHRINK = 0.85
# Nearly every first look finds the task done: halve the first delay (no GET is lost by it).
ALMOST_ALL_DONE = 0.9
HURRY = 0.5
FEEDBACK_EVERY = 0.5
FEEDBACK_MIN_LOOKS = 20
# A planned first look is moved only if the learned one is at least this much later.
REPLAN_MARGIN = 0.05
# Planned first looks are brought forward when the first delay falls below this share of the
# longest one handed out since they were last brought forward.
BRING_FORWARD_SHARE = 0.75
PREDICTION_MARGIN = 1.02
EMPTY_RESULT_DELAY = 0.5


@dataclass
class _ModelTiming:
    """What is known of one model's task durations."""

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    unfitted: int = 0
    log_mean: float = 0.0
    log_sd: float = 0.0
    low_end: float | None = None
    shrink: float = 1.0
    hurry: float = 1.0
    looks: int = 0
    hits: int = 0
    adjusted_at: float = float("-inf")
    longest_planned: float = 0.0


@dataclass
class PollPlanner:
    """Per-model poll timing; pure arithmetic, no I/O."""

    min_interval: float = DEFAULT_MIN_INTERVAL
    max_interval: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    _models: dict[str, _ModelTiming] = field(default_factory=dict)

    @property
    def default_first(self) -> float:
        """The first delay of a model nothing is known of: never late for any task."""
        return SAFETY * self.min_interval

    def allowed_delay(self, duration: float) -> float:
        """How long after a task of `duration` is ready its result may be recorded."""
        return max(self.min_interval, SLACK_SHARE * duration)

    def seed(self, model: str | None, durations: Iterable[float]) -> None:
        """Start from durations seen in earlier runs: the least durations their tasks'
        progress allowed (`least_duration`), the same samples a run learns from itself."""
        for duration in durations:
            self.observe_duration(model, duration)

    def observe_duration(self, model: str | None, duration: float) -> None:
        """A task of `model` took (at least) `duration` seconds."""
        if duration > 0:
            timing = self._timing(model)
            timing.samples.append(duration)
            timing.unfitted += 1

    def first_delay(self, model: str | None) -> float:
        """Seconds from a task's submit to its first look."""
        timing = self._timing(model)
        first = self._unhurried_first(timing) * timing.hurry
        return min(self.max_interval, max(FIRST_FLOOR, first))

    def _learned_first(self, timing: _ModelTiming) -> float:
        """The first delay the durations alone give (the default without a fit)."""
        low = self._low_end(timing)
        return self.default_first if low is None else low + SAFETY * self.allowed_delay(low)

    def _unhurried_first(self, timing: _ModelTiming) -> float:
        """The learned first delay after the shrinking guard, which never takes it below the
        default (below it no result can be late)."""
        first = self._learned_first(timing)
        return max(first * timing.shrink, min(first, self.default_first))

    def first_poll_at(self, model: str | None, sent_at: float) -> float:
        """When to look at a task submitted at `sent_at` for the first time."""
        delay = self.first_delay(model)
        timing = self._timing(model)
        timing.longest_planned = max(timing.longest_planned, delay)
        return sent_at + delay

    def shortened_first_delay(self, model: str | None) -> float | None:
        """The first delay, if it is now clearly shorter (BRING_FORWARD_SHARE) than the
        longest one first looks were planned with since this last answered: those looks
        should come this soon after their submit instead. Else None."""
        timing = self._timing(model)
        delay = self.first_delay(model)
        # A planner that planned nothing (a poller beside a separate submitter) compares with
        # the default, what first looks are planned with before anything is learned.
        if delay >= BRING_FORWARD_SHARE * (timing.longest_planned or self.default_first):
            return None
        timing.longest_planned = delay
        return delay

    def first_look_due(self, model: str | None, sent_at: float, now: float) -> float | None:
        """For a first look falling due at `now`: when it should come instead, if what was
        learned since it was planned puts it later; None to look now."""
        due = self.first_poll_at(model, sent_at)
        return due if due > now + REPLAN_MARGIN else None

    def observe_first_poll(self, model: str | None, *, done: bool, now: float) -> None:
        """Feedback from a first look. At most every FEEDBACK_EVERY seconds: if clearly more
        first looks found the task done than the fitted durations predict, shrink the first
        delay a step; if about as many did, undo a step of earlier shrinking. Apart from that,
        if nearly all of them did, halve it; if clearly fewer did, undo a halving."""
        timing = self._timing(model)
        timing.looks += 1
        timing.hits += done
        if now - timing.adjusted_at < FEEDBACK_EVERY or timing.looks < FEEDBACK_MIN_LOOKS:
            return
        share = timing.hits / timing.looks
        # Judge the looks against the delay they were made at, before changing anything.
        expected = self._done_share(timing, self.first_delay(model))
        self._adjust_hurry(timing, share)
        self._adjust_shrink(timing, share - expected,
                            2 * math.sqrt(expected * (1 - expected) / timing.looks))
        timing.looks = timing.hits = 0
        timing.adjusted_at = now

    def _adjust_hurry(self, timing: _ModelTiming, share: float) -> None:
        """Halve the first delay when nearly every first look found the task done (down to
        FIRST_FLOOR, no further); undo a halving when clearly fewer did."""
        if share >= ALMOST_ALL_DONE:
            timing.hurry = max(timing.hurry * HURRY,
                               FIRST_FLOOR / max(FIRST_FLOOR, self._unhurried_first(timing)))
        elif share < ALMOST_ALL_DONE * 0.8:
            timing.hurry = min(1.0, timing.hurry / HURRY)

    def _adjust_shrink(self, timing: _ModelTiming, excess: float, noise: float) -> None:
        """Shrink a step when `excess` (the share of first looks that found the task done
        beyond what the fit predicts) is clearly above EXCESS_DONE_AT_FIRST_LOOK, given
        `noise` (two standard errors); undo a step when it is small. Never below the default,
        where shrinking has no effect."""
        if excess > EXCESS_DONE_AT_FIRST_LOOK + noise:
            learned = self._learned_first(timing)
            floor = min(1.0, self.default_first / learned)
            timing.shrink = max(timing.shrink * SHRINK, floor)
        elif excess < EXCESS_DONE_AT_FIRST_LOOK / 3:
            timing.shrink = min(1.0, timing.shrink / SHRINK)

    def next_poll_at(self, model: str | None, *, sent_at: float | None, now: float,
                     progress: float | None) -> float:
        """When to look again at a task that was not finished at `now`."""
        if sent_at is None:
            sent_at = now
        age = max(0.0, now - sent_at)
        if progress is not None and 0 < progress < 100 and age > 0:
            return self._predicted_poll_at(model, sent_at, now, age, progress)
        step = SAFETY * self.allowed_delay(age) * self.rng.uniform(0.8, 1.0)
        return now + min(self.max_interval, step)

    @staticmethod
    def empty_result_poll_at(now: float) -> float:
        """`completed` without results: look again shortly (foxapi.md §3)."""
        return now + EMPTY_RESULT_DELAY

    @staticmethod
    def least_duration(*, sent_at: float | None, now: float,
                       progress: float | None) -> float | None:
        """The shortest duration a task showing `progress` (0-100) at `now` can have: a whole
        percentage p at age a puts it in (a*100/(p+1), a*100/p]. None without usable
        progress."""
        if sent_at is None or progress is None or not 0 < progress < 100 or now <= sent_at:
            return None
        return _shortest(now - sent_at, progress)

    def _predicted_poll_at(self, model: str | None, sent_at: float, now: float, age: float,
                           progress: float) -> float:
        """A whole percentage p at `age` puts the duration in (age*100/(p+1), age*100/p]:
        look at the end of that range, or earlier if the range is wider than the delay
        allowed at its start."""
        shortest = _shortest(age, progress)
        longest = age * 100.0 / progress
        self.observe_duration(model, shortest)
        due = sent_at + min(longest * PREDICTION_MARGIN + FIRST_FLOOR,
                            shortest + SAFETY * self.allowed_delay(shortest))
        return min(now + self.max_interval, max(now + FIRST_FLOOR, due))

    def _low_end(self, timing: _ModelTiming) -> float | None:
        """The low end of the model's durations (refitted every REFIT_EVERY samples)."""
        if len(timing.samples) < MIN_SAMPLES:
            return None
        if timing.low_end is None or timing.unfitted >= REFIT_EVERY:
            logs = [math.log(s) for s in timing.samples]
            timing.log_mean, timing.log_sd = statistics.fmean(logs), statistics.pstdev(logs)
            fitted = math.exp(timing.log_mean - LOW_END_SIGMAS * timing.log_sd)
            timing.low_end = min(fitted, min(timing.samples))
            timing.unfitted = 0
        return timing.low_end

    def _done_share(self, timing: _ModelTiming, delay: float) -> float:
        """The share of tasks done within `delay` that the fitted durations predict (0 before
        there is a fit: then any task done at its first look counts as unexpected)."""
        if self._low_end(timing) is None:
            return 0.0
        if timing.log_sd == 0:
            return 1.0 if delay >= math.exp(timing.log_mean) else 0.0
        z = (math.log(delay) - timing.log_mean) / timing.log_sd
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    def _timing(self, model: str | None) -> _ModelTiming:
        key = model or ""
        if key not in self._models:
            self._models[key] = _ModelTiming()
        return self._models[key]


def _shortest(age: float, progress: float) -> float:
    """The shortest duration of a task at `progress` percent (0 < progress < 100) at `age`."""
    return age * 100.0 / (math.floor(progress) + 1)
