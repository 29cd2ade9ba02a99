"""Adaptive poll timing."""

from __future__ import annotations

import random

import pytest

from foxbatch.schedule import MIN_SAMPLES, SAFETY, PollPlanner


def planner() -> PollPlanner:
    return PollPlanner(rng=random.Random(1))


def lognormal(n: int, median: float, sigma: float, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [median * rng.lognormvariate(0.0, sigma) for _ in range(n)]


def learn(p: PollPlanner, model: str, durations: list[float]) -> None:
    """Feed `durations` as running tasks report them: a first look at 10% of each."""
    for d in durations:
        p.next_poll_at(model, sent_at=0.0, now=d / 10, progress=10)


def test_the_default_first_look_is_never_late():
    p = planner()
    assert p.first_delay("m") == SAFETY * p.min_interval
    # A task done at once waits at most the first delay: less than any allowed delay.
    assert p.first_delay("m") < p.allowed_delay(0.0)


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_the_learned_first_look_is_late_for_no_task_of_a_thousand(sigma):
    p = planner()
    learn(p, "m", lognormal(64, 4.0, sigma))  # a first batch's running tasks
    first = p.first_delay("m")
    assert first > p.default_first  # most tasks are still running long after the default
    population = lognormal(1000, 4.0, sigma, seed=99)
    late = [d for d in population if d < first and first - d > p.allowed_delay(d)]
    assert late == []


def test_the_first_look_waits_for_enough_samples():
    p = planner()
    learn(p, "m", [4.0] * (MIN_SAMPLES - 1))
    assert p.first_delay("m") == p.default_first
    learn(p, "m", [4.0])
    assert p.first_delay("m") > p.default_first


def test_models_are_learned_separately():
    p = planner()
    learn(p, "slow", lognormal(40, 20.0, 0.3))
    learn(p, "fast", lognormal(40, 2.0, 0.3))
    assert p.first_delay("fast") < p.first_delay("slow")
    assert p.first_delay("other") == p.default_first


def test_a_planned_first_look_moves_only_when_the_learned_one_is_later():
    p = planner()
    assert p.first_look_due("m", sent_at=10.0, now=10.8) is None  # nothing learned: look now
    learn(p, "m", lognormal(64, 8.0, 0.3))
    due = p.first_look_due("m", sent_at=10.0, now=10.8)
    assert due == p.first_poll_at("m", 10.0) and due > 11.0
    assert p.first_look_due("m", sent_at=10.0, now=due) is None


def test_more_tasks_done_at_first_look_than_predicted_shrink_it_until_they_agree():
    p = planner()
    learn(p, "m", lognormal(64, 8.0, 0.3))
    learned = p.first_delay("m")
    for t in range(400):  # most first looks find the task done: the model got faster
        p.observe_first_poll("m", done=t % 4 != 0, now=t * 0.1)
    shrunk = p.first_delay("m")
    assert shrunk < learned * 0.5 and shrunk >= p.default_first
    for t in range(400, 1000):  # as predicted again: the shrinking is undone
        p.observe_first_poll("m", done=False, now=t * 0.1)
    assert p.first_delay("m") == pytest.approx(learned)


def test_a_batch_of_first_looks_at_once_moves_the_delay_one_step():
    p = planner()
    learn(p, "m", lognormal(64, 8.0, 0.3))
    learned = p.first_delay("m")
    for t in range(1000):  # a whole batch, most done, all answered at the same moment
        p.observe_first_poll("m", done=t % 4 != 0, now=5.0)
    assert p.first_delay("m") >= learned * 0.85 - 1e-9


def test_done_at_first_look_as_predicted_leaves_the_delay_alone():
    p = planner()
    learn(p, "m", lognormal(200, 1.0, 0.3))  # short tasks: most are done at the first look
    learned = p.first_delay("m")
    durations = lognormal(400, 1.0, 0.3, seed=5)
    for t, d in enumerate(durations):
        p.observe_first_poll("m", done=d <= p.first_delay("m"), now=t * 0.05)
    assert p.first_delay("m") == pytest.approx(learned)


def test_progress_predicts_the_next_look():
    p = planner()
    # 2 s after submit the task says 40%: it is done by 5 s (40% covers 4.88 to 5 s).
    due = p.next_poll_at("m", sent_at=0.0, now=2.0, progress=40)
    assert 5.0 <= due <= 5.3


def test_a_coarse_progress_looks_within_the_delay_allowed_at_its_shortest():
    p = planner()
    # 1% at 0.5 s: anywhere from 25 to 50 s; a look at 50 s could be 25 s late.
    due = p.next_poll_at("m", sent_at=0.0, now=0.5, progress=1)
    assert due <= 25.0 + SAFETY * p.allowed_delay(25.0)


def test_without_progress_the_interval_grows_with_age_and_is_capped():
    p = planner()
    young = p.next_poll_at("m", sent_at=0.0, now=1.0, progress=None) - 1.0
    old = p.next_poll_at("m", sent_at=0.0, now=40.0, progress=None) - 40.0
    ancient = p.next_poll_at("m", sent_at=0.0, now=10_000.0, progress=0) - 10_000.0
    assert 0.8 * SAFETY <= young <= SAFETY
    assert 8.0 * SAFETY <= old <= 10.0 * SAFETY  # the delay allowed at its age, jittered
    assert ancient <= p.max_interval


def test_seed_from_earlier_durations():
    p = planner()
    p.seed("m", [4.0] * 10 + [8.0] * 10)
    assert 1.5 <= p.first_delay("m") <= 4.0
    p.seed("other", [1.0])  # too few to learn from
    assert p.first_delay("other") == p.default_first


def test_when_nearly_every_first_look_finds_the_task_done_the_first_look_comes_sooner():
    p = planner()
    for t in range(100):  # tasks of a few milliseconds: each first look finds them done
        p.observe_first_poll("m", done=True, now=t * 0.1)
    hurried = p.first_delay("m")
    assert hurried < p.default_first / 4
    for t in range(100, 300):  # now most are still running at it: back to the default
        p.observe_first_poll("m", done=t % 2 == 0, now=t * 0.1)
    assert p.first_delay("m") == p.default_first


def test_a_clearly_shorter_first_delay_is_reported_once_per_step_down():
    """The poller brings planned first looks forward when this says so: only when the first
    delay fell clearly below the longest one handed out, and once for each such fall."""
    p = planner()
    p.first_poll_at("m", 0.0)  # planned with the default
    assert p.shortened_first_delay("m") is None
    for t in range(20):  # every first look finds the task done: the delay halves
        p.observe_first_poll("m", done=True, now=t * 0.1)
    shorter = p.shortened_first_delay("m")
    assert shorter == p.first_delay("m") and shorter <= p.default_first / 2
    assert p.shortened_first_delay("m") is None  # reported already
    for t in range(20, 40):  # halved again: reported again
        p.observe_first_poll("m", done=True, now=1.0 + t * 0.1)
    assert p.shortened_first_delay("m") == pytest.approx(shorter / 2)


def test_a_planner_that_planned_nothing_compares_with_the_default():
    p = planner()  # a poller beside a separate submitter: first looks came at the default
    for t in range(20):
        p.observe_first_poll("m", done=True, now=t * 0.1)
    assert p.shortened_first_delay("m") == p.first_delay("m") < p.default_first


def test_the_guards_stop_at_their_floors_and_recover_in_a_few_steps():
    """Tasks that fail at once for a long while (every first look finds them done) must not
    wind the guards up past their floors: once looks find tasks running again, the first
    delay is back within a few feedback rounds."""
    p = planner()
    learn(p, "m", lognormal(64, 8.0, 0.3))
    learned = p.first_delay("m")
    for t in range(5000):  # about 40 minutes of 20-look rounds, every look done
        p.observe_first_poll("m", done=True, now=t * 0.5)
    assert p.first_delay("m") >= 0.02
    rounds = 0
    while p.first_delay("m") < learned * 0.999 and rounds < 40:
        for _ in range(20):
            p.observe_first_poll("m", done=False, now=2600.0 + rounds)
        rounds += 1
    assert p.first_delay("m") == pytest.approx(learned) and rounds <= 12


def test_least_duration_is_the_short_end_of_what_progress_allows():
    p = planner()
    assert p.least_duration(sent_at=10.0, now=12.0, progress=40) == pytest.approx(200 / 41)
    assert p.least_duration(sent_at=10.0, now=12.0, progress=40.7) == pytest.approx(200 / 41)
    for progress in (None, 0, 100):
        assert p.least_duration(sent_at=10.0, now=12.0, progress=progress) is None
    assert p.least_duration(sent_at=None, now=12.0, progress=40) is None
    assert p.least_duration(sent_at=12.0, now=12.0, progress=40) is None
