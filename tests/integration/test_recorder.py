"""The group commit (foxbatch.recorder) on a real SQLite file."""

from __future__ import annotations

import asyncio
import time

import pytest

from foxbatch.recorder import Recorder, StoreThread, wait_event
from foxbatch.store import open_store
from foxbatch.store.records import TaskCreated
from tests.engine_helpers import seed_job


@pytest.fixture
def store(sqlite_url):
    repo = open_store(sqlite_url)
    yield repo
    repo.engine.dispose()


def created(store, n: int) -> list[TaskCreated]:
    """Outcomes for `n` freshly claimed rows: their tasks were created."""
    claims = store.claim_queued("w", n, lease_seconds=30)
    return [TaskCreated(c.item_id, c.lease_token, c.attempt, f"t{c.row_key}", time.time(),
                        time.time() + 60) for c in claims]


async def commit_seconds(recorder: Recorder, outcomes: list, *, within: float) -> float:
    """Add `outcomes` to a running recorder and ask for a commit soon; return how long the
    commit took (inf if none came within `within` seconds)."""
    task = asyncio.create_task(recorder.run())
    started = time.monotonic()
    for outcome in outcomes:
        recorder.add(outcome)
    recorder.commit_soon()
    while recorder.commits == 0 and time.monotonic() - started < within:
        await asyncio.sleep(0.005)
    took = time.monotonic() - started if recorder.commits else float("inf")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return took


async def test_commit_soon_commits_without_waiting_out_the_delay(store):
    seed_job(store, 3)
    db = StoreThread(store)
    recorder = Recorder(db, max_delay=30.0)
    assert await commit_seconds(recorder, created(store, 3), within=5.0) < 2.0
    assert recorder.totals.applied == 3
    db.close()


async def test_a_cancelled_recorder_commits_what_it_holds(store):
    job = seed_job(store, 2)
    db = StoreThread(store)
    recorder = Recorder(db, max_delay=30.0)
    task = asyncio.create_task(recorder.run())
    for outcome in created(store, 2):
        recorder.add(outcome)
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    db.close()
    assert {item["status"] for item in store.iter_items(job)} == {"pending"}


async def test_a_recorder_cancelled_mid_commit_still_commits_that_batch(store):
    """Shutdown cancels the recorder; if that lands while its batch waits for the database
    thread (busy with a claim, say), the batch must still be committed, not dropped."""
    job = seed_job(store, 4)
    db = StoreThread(store)
    recorder = Recorder(db, max_delay=30.0)
    task = asyncio.create_task(recorder.run())
    busy = asyncio.ensure_future(db.call(time.sleep, 0.3))  # the thread is busy for a while
    for outcome in created(store, 4):
        recorder.add(outcome)
    recorder.commit_soon()
    await asyncio.sleep(0.05)  # the recorder now waits for the thread with its batch
    assert recorder.pending == 4
    task.cancel()
    await asyncio.gather(task, busy, return_exceptions=True)
    db.close()
    assert recorder.commits == 1 and recorder.pending == 0
    assert {item["status"] for item in store.iter_items(job)} == {"pending"}


async def test_a_wait_cancelled_as_its_event_is_set_is_still_cancelled():
    """The race that hung a stopping engine: on Python 3.11, asyncio.wait_for returned
    normally when the cancel came together with the event, and the recorder kept waiting."""
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_event(event, 10.0))
    await asyncio.sleep(0)
    event.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_wait_ends_when_its_time_is_up():
    started = time.monotonic()
    await wait_event(asyncio.Event(), 0.05)
    assert 0.04 <= time.monotonic() - started < 1.0
