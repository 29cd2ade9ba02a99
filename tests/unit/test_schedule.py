"""Adaptive poll timing."""

from __future__ import annotations

import random

from foxbatch.schedule import FIRST_FLOOR, PollPlanner


def planner() -> PollPlanner:
    return PollPlanner(rng=random.Random(1))


def test_first_look_shortens_when_tasks_are_done_and_lengthens_when_not():
    p = planner()
    start = p.first_poll_at("m", 0.0)
    for t in range(10):
        p.observe_first_poll("m", done=True, now=float(t))
    shorter = p.first_poll_at("m", 0.0)
    assert shorter < start
    for t in range(10, 20):
        p.observe_first_poll("m", done=False, now=float(t))
    assert p.first_poll_at("m", 0.0) > shorter
    for t in range(20, 1000):
        p.observe_first_poll("m", done=True, now=float(t))
    assert p.first_poll_at("m", 0.0) == FIRST_FLOOR


def test_a_batch_of_first_looks_at_once_moves_the_delay_one_step():
    p = planner()
    start = p.first_poll_at("m", 0.0)
    for _ in range(1000):  # a whole batch submitted together, all still running at 0.5 s
        p.observe_first_poll("m", done=False, now=0.5)
    assert p.first_poll_at("m", 0.0) <= start * 1.2


def test_hits_in_the_target_band_leave_the_delay_alone():
    p = planner()
    start = p.first_poll_at("m", 0.0)
    for t in range(100):
        p.observe_first_poll("m", done=t % 4 == 0, now=t / 4)
    assert p.first_poll_at("m", 0.0) == start


def test_models_are_learned_separately():
    p = planner()
    for t in range(20):
        p.observe_first_poll("fast", done=True, now=float(t))
    assert p.first_poll_at("fast", 0.0) < p.first_poll_at("slow", 0.0)


def test_progress_predictions_pull_the_first_look_both_ways():
    p = planner()
    for _ in range(50):
        p.next_poll_at("m", sent_at=0.0, now=2.0, progress=20)  # tasks of about 10 s
    assert p.first_poll_at("m", 0.0) > 4.0
    for _ in range(50):
        p.next_poll_at("m", sent_at=0.0, now=0.5, progress=50)  # tasks of about 1 s
    assert p.first_poll_at("m", 0.0) < 1.0


def test_progress_predicts_the_next_look():
    p = planner()
    # 2 s after submit the task says 40%: it should be done at 5 s.
    due = p.next_poll_at("m", sent_at=0.0, now=2.0, progress=40)
    assert 5.0 <= due <= 5.3


def test_without_progress_the_interval_grows_with_age_and_is_capped():
    p = planner()
    young = p.next_poll_at("m", sent_at=0.0, now=1.0, progress=None) - 1.0
    old = p.next_poll_at("m", sent_at=0.0, now=40.0, progress=None) - 40.0
    ancient = p.next_poll_at("m", sent_at=0.0, now=10_000.0, progress=0) - 10_000.0
    assert 0.8 <= young <= 1.0
    assert 8.0 <= old <= 10.0  # a quarter of the age, jittered
    assert ancient <= p.max_interval


def test_seed_from_earlier_durations():
    p = planner()
    p.seed("m", [4.0] * 10 + [8.0] * 10)
    assert 3.9 <= p.first_poll_at("m", 0.0) <= 4.1
    p.seed("other", [1.0])  # too few to learn from
    assert p.first_poll_at("other", 0.0) == p.default_first
