"""The engine (submitter + poller + runner) on a real SQLite file against the simulator app."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest

from foxbatch import runner as runner_module
from foxbatch.client import FoxClient, TaskView
from foxbatch.errors import AuthenticationError, QuotaError
from foxbatch.models import OnDoubt
from foxbatch.poller import BRING_FORWARD_AGAIN, Poller
from foxbatch.ratelimit import Limiter
from foxbatch.recorder import Recorder, StoreThread
from foxbatch.runner import Runner
from foxbatch.schedule import PollPlanner
from foxbatch.sim import SimConfig, Simulator
from foxbatch.store import open_store
from foxbatch.store.records import PollClaim, TaskCreated
from foxbatch.submitter import EngineOptions, Submitter
from tests.engine_helpers import (
    assert_answers_are_their_own,
    assert_duplicates_within_in_doubt,
    in_doubt_total,
    run_engine,
    seed_job,
)


@pytest.fixture
def store(sqlite_url):
    repo = open_store(sqlite_url)
    yield repo
    repo.engine.dispose()


async def test_every_row_gets_its_own_answer_once(store):
    job = seed_job(store, 200)
    sim = Simulator(SimConfig(seed=1))
    summary = await run_engine(store, sim, job)
    assert summary.reason == "done"
    assert summary.counts["succeeded"] == 200
    assert assert_answers_are_their_own(store, job) == 200
    stats = sim.stats()
    assert stats["tasks_created"] == 200 and stats["duplicates"] == 0
    # Group commits: far fewer than the three commits per task the issue allows.
    assert summary.commits <= 3 * 200
    attempt = store.attempts_of(store.item_by_key(job, "7")["id"])
    assert [(a["number"], a["outcome"]) for a in attempt] == [(1, "succeeded")]
    assert attempt[0]["task_id"]


async def test_failed_tasks_are_retried_then_fail_with_the_last_error(store):
    job = seed_job(store, 60)
    sim = Simulator(SimConfig(seed=2, failure_rate=0.5))
    summary = await run_engine(store, sim, job, max_attempts=2, retry_base=0.05)
    assert summary.reason == "done"
    failed = [i for i in store.iter_items(job) if i["status"] == "failed"]
    assert failed, "with a 50% failure rate some rows fail twice"
    for item in failed:
        assert item["attempts"] == 2
        assert item["error_code"] in ("generation_failed", "task_failed")
        assert [a["outcome"] for a in store.attempts_of(item["id"])] == ["task_failed"] * 2
    assert summary.counts["succeeded"] + len(failed) == 60
    assert sim.stats()["tasks_created"] == sum(i["attempts"] for i in store.iter_items(job))


async def test_a_422_fails_the_row_at_once(store):
    job = seed_job(store, 5, model="gpt-5.4")
    sim = Simulator(SimConfig(seed=3, models=("claude-opus-4-7",)))
    summary = await run_engine(store, sim, job)
    assert summary.counts["failed"] == 5
    item = store.item_by_key(job, "1")
    assert (item["error_code"], item["attempts"]) == ("model_not_supported", 1)
    assert store.attempts_of(item["id"])[0]["http_status"] == 422


async def test_429s_slow_down_without_duplicates_or_spent_attempts(store):
    job = seed_job(store, 40)
    sim = Simulator(SimConfig(seed=4, p429=0.05, retry_after=0))
    summary = await run_engine(store, sim, job, max_attempts=1)
    assert summary.counts["succeeded"] == 40
    stats = sim.stats()
    assert stats["rate_limited"] > 0 and stats["duplicates"] == 0
    # A 429 proves no task was created: it never uses up the attempt budget.
    assert all(i["in_doubt_resubmits"] == 0 for i in store.iter_items(job))


@pytest.mark.parametrize("fault", ["p5xx_submit_after", "pdrop_submit"])
async def test_in_doubt_submits_are_resubmitted_and_counted(store, fault):
    job = seed_job(store, 80)
    sim = Simulator(SimConfig(seed=5, **{fault: 0.25}))
    summary = await run_engine(store, sim, job, max_attempts=5, retry_base=0.05)
    assert summary.counts["succeeded"] == 80
    assert assert_answers_are_their_own(store, job) == 80
    assert in_doubt_total(store, job) > 0
    assert sim.stats()["duplicates"] == in_doubt_total(store, job)
    assert_duplicates_within_in_doubt(store, sim, job)


async def test_hold_policy_parks_in_doubt_rows(store):
    job = seed_job(store, 40)
    sim = Simulator(SimConfig(seed=6, p5xx_submit_after=0.3))
    summary = await run_engine(store, sim, job, on_doubt=OnDoubt.HOLD)
    held = [i for i in store.iter_items(job) if i["error_code"] == "in_doubt_held"]
    assert held and summary.counts["failed"] == len(held)
    assert sim.stats()["duplicates"] == 0


async def test_submit_5xx_before_creating_is_also_in_doubt_but_creates_nothing(store):
    job = seed_job(store, 40)
    sim = Simulator(SimConfig(seed=7, p5xx_submit_before=0.3))
    summary = await run_engine(store, sim, job, max_attempts=6, retry_base=0.05)
    assert summary.counts["succeeded"] == 40
    assert sim.stats()["duplicates"] == 0
    assert in_doubt_total(store, job) > 0  # a 5xx cannot tell: it is counted as in doubt


async def test_poll_errors_are_retried_in_call(store):
    job = seed_job(store, 40)
    sim = Simulator(SimConfig(seed=8, p5xx_get=0.2))
    summary = await run_engine(store, sim, job)
    assert summary.counts["succeeded"] == 40
    assert sim.stats()["duplicates"] == 0


async def test_completed_without_results_is_polled_again(store):
    job = seed_job(store, 20)
    sim = Simulator(SimConfig(seed=9, empty_result_polls=2))
    summary = await run_engine(store, sim, job)
    assert summary.counts["succeeded"] == 20
    assert all(i["polls"] >= 3 for i in store.iter_items(job))


async def test_vanished_tasks_are_resubmitted_then_fail(store):
    job = seed_job(store, 10)
    sim = Simulator(SimConfig(seed=10, expire_after=0.0, latency_median=0.05))
    summary = await run_engine(store, sim, job, max_attempts=2, retry_base=0.05)
    assert summary.counts["failed"] == 10
    item = store.item_by_key(job, "1")
    assert (item["error_code"], item["attempts"]) == ("task_not_found", 2)


async def test_401_stops_at_once_and_loses_nothing(store):
    job = seed_job(store, 50)
    sim = Simulator(SimConfig(seed=11, api_key="sk-right"))
    summary = await run_engine(store, sim, job, api_key="sk-wrong")
    assert summary.reason == "fatal" and isinstance(summary.fatal, AuthenticationError)
    assert summary.counts["queued"] == 50
    assert all(i["attempts"] == i["free_attempts"] for i in store.iter_items(job))
    resumed = await run_engine(store, sim, job, api_key="sk-right")
    assert resumed.counts["succeeded"] == 50
    assert sim.stats()["duplicates"] == 0


async def test_402_stops_and_the_next_run_resumes(store):
    job = seed_job(store, 30)
    sim = Simulator(SimConfig(seed=12, quota=10))
    summary = await run_engine(store, sim, job, concurrency=4)
    assert summary.reason == "fatal" and isinstance(summary.fatal, QuotaError)
    counts = summary.counts
    assert counts["failed"] == 0 and counts["succeeded"] + counts["pending"] <= 10
    assert counts["queued"] >= 20
    resumed = await run_engine(store, Simulator(SimConfig(seed=12)), job)
    assert resumed.counts["succeeded"] == 30


async def test_stop_releases_work_and_a_rerun_finishes(store):
    job = seed_job(store, 30)
    sim = Simulator(SimConfig(seed=13, latency_median=0.5))
    async with FoxClient("http://sim", "sk-t", transport=httpx.ASGITransport(app=sim.app)) as c:
        runner = Runner(store, c, EngineOptions(), job_ids=[job], grace=2.0)
        asyncio.get_running_loop().call_later(0.3, runner.stop)
        summary = await runner.run()
    assert summary.reason == "stopped"
    assert summary.counts["submitting"] == 0
    assert summary.counts["pending"] + summary.counts["succeeded"] == 30
    resumed = await run_engine(store, sim, job)
    assert resumed.counts["succeeded"] == 30
    assert sim.stats()["duplicates"] == 0


async def test_dead_workers_claims_are_rescued_as_in_doubt(store):
    job = seed_job(store, 5)
    store.claim_queued("dead-worker", 5, lease_seconds=0.5)
    await asyncio.sleep(0.6)
    sim = Simulator(SimConfig(seed=14))
    summary = await run_engine(store, sim, job)
    assert summary.counts["succeeded"] == 5
    assert in_doubt_total(store, job) == 5


async def test_adaptive_polling_needs_few_gets_per_task(store):
    job = seed_job(store, 150)
    sim = Simulator(SimConfig(seed=15, latency_median=0.4, latency_sigma=0.5))
    summary = await run_engine(store, sim, job, concurrency=200)
    assert summary.counts["succeeded"] == 150
    stats = sim.stats()
    assert stats["polls"] / stats["tasks_created"] <= 2.5


async def test_rows_cancelled_in_flight_record_results_but_are_not_retried(store):
    job = seed_job(store, 20)
    sim = Simulator(SimConfig(seed=16, latency_median=0.5, failure_rate=0.5))
    async with FoxClient("http://sim", "sk-t", transport=httpx.ASGITransport(app=sim.app)) as c:
        runner = Runner(store, c, EngineOptions(retry_base=0.05), job_ids=[job])

        def cancel_once_all_are_in_flight() -> None:
            store.cancel_items(job, ("queued",))
            store.request_cancel_in_flight(job)

        asyncio.get_running_loop().call_later(0.25, cancel_once_all_are_in_flight)
        summary = await runner.run()
    counts = summary.counts
    assert counts["succeeded"] > 0 and counts["cancelled"] > 0
    assert counts["succeeded"] + counts["cancelled"] == 20 and counts["queued"] == 0
    assert sim.stats()["tasks_created"] == 20  # no failed task was sent again


async def test_a_new_job_starts_from_the_durations_other_jobs_saw(store):
    """Last night's tasks (about 5 s, nearly all running at their first look) left the least
    durations their progress allowed; tonight's planner starts from them and looks later
    than the default."""
    first = seed_job(store, 60, name="last-night")
    await run_engine(store, Simulator(SimConfig(seed=17, latency_median=5.0,
                                                latency_sigma=0.3)), first)
    learned = [item["least_duration"] for item in store.iter_items(first)
               if item["least_duration"] is not None]
    assert len(learned) >= 57 and all(0 < d < 12.0 for d in learned)  # SEED_COVERAGE
    planner = await plan_for_a_new_job(store, "tonight")
    assert planner.first_delay("gpt-5.4") > planner.default_first


async def test_tasks_done_at_their_first_look_teach_a_new_job_nothing(store):
    """Tasks of a tenth of a second are done at the first look: their time from submit to
    result is the first delay, not theirs. A new job must not take them for tasks of that
    length (it would look at tomorrow's just as fast tasks later than allowed)."""
    first = seed_job(store, 30, name="last-night")
    await run_engine(store, Simulator(SimConfig(seed=18, latency_median=0.1)), first)
    planner = await plan_for_a_new_job(store, "tonight")
    assert planner.first_delay("gpt-5.4") == planner.default_first


async def plan_for_a_new_job(store, name: str) -> PollPlanner:
    """The planner of a run over a new, empty job in `store` (seeded from what it holds)."""
    planner = PollPlanner()
    tonight = seed_job(store, 0, name=name)
    async with FoxClient("http://sim", "sk-t", transport=httpx.ASGITransport(
            app=Simulator(SimConfig()).app)) as client:
        await Runner(store, client, EngineOptions(), job_ids=[tonight], planner=planner).run()
    return planner


async def test_first_looks_planned_before_anything_was_learned_move_without_a_get(store):
    """A batch submitted at once into a fresh store: its first looks are all planned at the
    default. The tasks polled first teach the planner that these tasks take seconds; the
    other first looks then move later without a GET, and a moved look is not counted as a
    poll: the store's poll counts are exactly the GETs the simulator received."""
    job = seed_job(store, 120)
    sim = Simulator(SimConfig(seed=21, latency_median=2.0, latency_sigma=0.2))
    planner = PollPlanner()
    async with FoxClient("http://sim", "sk-t", transport=httpx.ASGITransport(
            app=sim.app)) as client:
        summary = await Runner(store, client, EngineOptions(concurrency=8), job_ids=[job],
                               planner=planner).run()
    assert summary.counts["succeeded"] == 120
    gets = sim.stats()["polls"]
    assert sum(item["polls"] for item in store.iter_items(job)) == gets
    assert planner.first_delay("gpt-5.4") > planner.default_first
    # At the default first look (0.8 s) every task is running: two GETs or more each.
    assert gets / 120 < 1.9


async def test_first_looks_planned_with_a_delay_since_halved_are_brought_forward(store):
    """Twenty first looks that all find the task done halve the first delay; the poller's
    next claim then brings the first looks still planned with the default forward, and a
    claim BRING_FORWARD_AGAIN later those of tasks whose creation was still waiting for its
    group commit the first time."""
    job = seed_job(store, 40)
    planner = PollPlanner()
    clock = FakeClock(time.time())
    sent = clock.now
    claims = store.claim_queued("w", 40, lease_seconds=30)
    created = [TaskCreated(c.item_id, c.lease_token, c.attempt, f"t{c.row_key}", sent,
                           planner.first_poll_at(c.model, sent)) for c in claims]
    store.apply(created[:30])
    db = StoreThread(store)
    async with FoxClient("http://sim", "sk-t", transport=httpx.ASGITransport(
            app=Simulator(SimConfig()).app)) as client:
        poller = Poller(db, client, Limiter(8), Recorder(db), planner, EngineOptions(),
                        owner="w", job_ids=[job], clock=clock)
        done = TaskView("t", "completed", 100, {"choices": []}, None, None)
        for i in range(20):
            looked = PollClaim(item_id=10_000 + i, job_id=job, task_id="t", model="gpt-5.4",
                               attempt=1, free_attempts=0, polls=1, submitted_at=sent - 1,
                               lease_token="x")
            poller.outcome_of_view(looked, done)
        await poller.claim()
        store.apply(created[30:])  # their group commit comes after the first pass
        clock.now += BRING_FORWARD_AGAIN
        await poller.claim()
    db.close()
    halved = planner.first_delay("gpt-5.4")
    assert halved < planner.default_first * 0.75
    due = [item["next_poll_at"] - item["submitted_at"] for item in store.iter_items(job)]
    assert due == pytest.approx([halved] * 40)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("stage", ["submit", "poll"])
async def test_a_claim_cut_off_by_shutdown_gives_its_rows_back(store, stage):
    """Stopping cancels a claim while it runs on the database thread (here: waiting for the
    write lock another connection holds): the claim still happens there, and its rows are
    then released at once, not left to expire (a submit claim left to expire would come
    back in doubt)."""
    job = seed_job(store, 6)
    if stage == "poll":
        sent = time.time() - 10
        store.apply([TaskCreated(c.item_id, c.lease_token, c.attempt, f"t{c.row_key}", sent,
                                 sent) for c in store.claim_queued("w", 6, lease_seconds=30)])
    db = StoreThread(store)
    async with FoxClient("http://sim", "sk-t", transport=httpx.ASGITransport(
            app=Simulator(SimConfig()).app)) as client:
        parts = (db, client, Limiter(8), Recorder(db), PollPlanner(), EngineOptions())
        worker = (Submitter if stage == "submit" else Poller)(*parts, owner="w2", job_ids=[job])
        locker = sqlite3.connect(store.engine.url.database, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        claiming = asyncio.create_task(worker.claim())
        await asyncio.sleep(0.2)  # the claim waits for the lock on the database thread
        claiming.cancel()
        locker.execute("COMMIT")
        await asyncio.gather(claiming, return_exceptions=True)
        locker.close()
    db.close()
    items = list(store.iter_items(job))
    assert all(item["lease_token"] is None for item in items)
    if stage == "submit":
        assert {(item["status"], item["attempts"]) for item in items} == {("queued", 0)}
    else:
        assert {(item["status"], item["polls"]) for item in items} == {("pending", 0)}


async def test_the_end_is_found_when_the_last_result_is_recorded(store, monkeypatch):
    """The upkeep loop looks for the end as soon as nothing is in flight and everything is
    committed, not at its next round (made 5 s long here)."""
    monkeypatch.setattr(runner_module, "DONE_CHECK_EVERY", 5.0)
    job = seed_job(store, 5)
    started = time.monotonic()
    summary = await run_engine(store, Simulator(SimConfig(seed=22, latency_median=0.0)), job)
    assert summary.counts["succeeded"] == 5
    assert time.monotonic() - started < 3.0  # the first looks come 0.8 s after the submits
