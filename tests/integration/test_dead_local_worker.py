"""A worker of this machine that died (kill -9) does not make the next run wait out its leases."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from foxbatch.runner import is_dead_local_owner
from foxbatch.sim import SimConfig, Simulator
from foxbatch.store import open_store
from tests.engine_helpers import in_doubt_total, run_engine, seed_job


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_dead_local_owner_detection():
    host = socket.gethostname()
    assert is_dead_local_owner(f"{host}:{dead_pid()}:abc123")
    assert not is_dead_local_owner(f"{host}:{os.getpid()}:abc123")  # this very process
    assert not is_dead_local_owner(f"{host}:1:abc123")  # alive (init)
    assert not is_dead_local_owner(f"elsewhere-{host}:{dead_pid()}:abc123")  # not ours to judge
    assert not is_dead_local_owner("not-a-worker-id")


@pytest.fixture
def store(sqlite_url):
    repo = open_store(sqlite_url)
    yield repo
    repo.engine.dispose()


def test_only_the_dead_workers_claims_are_expired(store):
    job = seed_job(store, 4)
    host = socket.gethostname()
    dead, remote = f"{host}:{dead_pid()}:aaaaaa", f"other-{host}:42:bbbbbb"
    store.claim_queued(dead, 2, lease_seconds=300)
    store.claim_queued(remote, 2, lease_seconds=300)
    assert sorted(store.lease_owners([job])) == sorted([dead, remote])
    assert store.expire_claims_of([dead]) == 2
    assert store.rescue_expired() == 2
    assert store.lease_owners([job]) == [remote]


async def test_a_rerun_after_kill_9_resumes_at_once(store):
    job = seed_job(store, 6)
    store.claim_queued(f"{socket.gethostname()}:{dead_pid()}:cccccc", 6, lease_seconds=300)
    started = time.monotonic()
    summary = await run_engine(store, Simulator(SimConfig(seed=2)), job, lease_seconds=300)
    assert summary.counts["succeeded"] == 6
    assert time.monotonic() - started < 30  # not the 300 s lease
    assert in_doubt_total(store, job) == 6  # the dead worker may have sent them: in doubt
