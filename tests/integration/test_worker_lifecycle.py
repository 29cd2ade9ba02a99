"""A Runner in the workers table: registered at start, heartbeating, stopped at the end; a
dead worker's claims rescued by a live runner within --lease-seconds; and a run whose loop fails
stops instead of going on without it."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from foxbatch.client import FoxClient
from foxbatch.runner import Runner
from foxbatch.sim import SimConfig, Simulator
from foxbatch.store import open_store
from foxbatch.submitter import EngineOptions
from tests.engine_helpers import seed_job


async def run_for(runner: Runner, seconds: float) -> None:
    asyncio.get_running_loop().call_later(seconds, runner.stop)
    await runner.run(until_done=False)


async def test_a_runner_registers_heartbeats_and_stops(sqlite_url):
    repo = open_store(sqlite_url)
    job_id = seed_job(repo, 5)
    sim = Simulator(SimConfig(seed=1, latency_median=5.0))  # tasks outlive the run
    async with FoxClient("http://sim", "sk-t", transport=httpx.ASGITransport(app=sim.app)) as c:
        runner = Runner(repo, c, EngineOptions(lease_seconds=2.0), job_ids=[job_id], grace=0.1)
        seen = []

        async def watch() -> None:
            for _ in range(10):
                await asyncio.sleep(0.1)
                seen.extend(w for w in repo.list_workers() if w.id == runner.owner)

        await asyncio.gather(run_for(runner, 1.5), watch())
    heartbeats = sorted({w.heartbeat_at for w in seen})
    assert len(heartbeats) >= 2  # every claim_lease / 3 = 0.53 s
    assert all((w.pid, w.job_ids, w.lease_seconds, w.stopped_at) == (os.getpid(), [job_id],
                                                                       2.0, None) for w in seen)
    [final] = [w for w in repo.list_workers() if w.id == runner.owner]
    assert final.stopped_at is not None and (final.submitting, final.polling) == (0, 0)
    repo.engine.dispose()


async def test_a_dead_workers_claims_come_back_within_lease_seconds(sqlite_url):
    repo = open_store(sqlite_url)
    options = EngineOptions(lease_seconds=2.0)
    sim = Simulator(SimConfig(seed=3))
    async with FoxClient("http://sim", "sk-t", transport=httpx.ASGITransport(app=sim.app)) as c:
        runner = Runner(repo, c, options, job_ids=None, grace=0.1)
        running = asyncio.create_task(runner.run(until_done=False))
        await asyncio.sleep(0.3)
        job_id = seed_job(repo, 3, name="orphans")
        repo.claim_queued("dead-worker", 3, lease_seconds=options.claim_lease)
        died = time.time()  # it claimed, then never sent nor renewed anything
        for _ in range(50):
            await asyncio.sleep(0.1)
            if repo.counts(job_id)["succeeded"] == 3:
                break
        runner.stop()
        await running
    for item in repo.iter_items(job_id):
        first, second = repo.attempts_of(item["id"])
        assert (first["worker"], first["error"], second["outcome"]) == (
            "dead-worker", "worker lease expired", "succeeded")
        assert options.claim_lease <= first["finished_at"] - died <= options.lease_seconds
    repo.engine.dispose()


class Failing:
    """A repository one of whose methods fails, as if the database had gone away."""

    def __init__(self, repo, method: str):
        self._repo = repo
        self._method = method

    def __getattr__(self, name):
        if name == self._method:
            raise ConnectionError("database went away")
        return getattr(self._repo, name)


@pytest.mark.parametrize(("method", "where"), [("claim_due_polls", "the poll loop"),
                                               ("apply", "the recorder")])
async def test_a_failing_loop_stops_the_run(sqlite_url, caplog, method, where):
    repo = open_store(sqlite_url)
    job_id = seed_job(repo, 5)
    sim = Simulator(SimConfig(seed=2))
    async with FoxClient("http://sim", "sk-t", transport=httpx.ASGITransport(app=sim.app)) as c:
        runner = Runner(Failing(repo, method), c, EngineOptions(), job_ids=[job_id], grace=0.1)
        summary = await asyncio.wait_for(runner.run(), timeout=10)
    assert summary.reason == "stopped"
    assert f"internal error in {where}" in caplog.text
    repo.engine.dispose()
