"""Many `foxbatch poll` worker processes on one PostgreSQL database.

- three workers on one job against `foxbatch sim` with latency and faults, one killed with
  SIGKILL mid-run: every row ends with its own answer, no row was ever owned by two workers at
  once, duplicate tasks only where reported in doubt, the dead worker's rows back in time;
- fencing: a worker paused (SIGSTOP) past its lease while its submits are in flight, its rows
  taken over, then resumed (SIGCONT), changes nothing; meanwhile the new owner's heartbeat
  keeps its own claims safe from the resumed worker's rescues;
- the shared rate limit: three workers with --rps R send at most R requests/s together;
- batch claims under contention (FOR UPDATE SKIP LOCKED): four threads, never the same row.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text

from foxbatch.sim import SimConfig, Simulator
from foxbatch.sim.server import serve_in_subprocess, serve_in_thread
from foxbatch.store import Repository, open_store
from foxbatch.store.engine import IDLE_IN_TRANSACTION_MS, make_engine
from foxbatch.store.records import TaskCreated, TaskSucceeded
from foxbatch.submitter import EngineOptions
from tests.engine_helpers import assert_answers_are_their_own, in_doubt_total, seed_job

pytestmark = pytest.mark.postgres

RESCUED = "worker lease expired"  # the error rescue_expired writes on the attempt it closes


@dataclass
class WorkerProcess:
    """A `foxbatch poll` subprocess and the file its stderr goes to."""

    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def finish(self, timeout: float) -> None:
        """Wait for the worker to exit 0; fail with the end of its log otherwise."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code != 0:
            pytest.fail(f"worker {self.process.pid} exited {code}:\n{self.log_text()[-3000:]}")


@pytest.fixture
def store(pg_url: str) -> Iterator[Repository]:
    repo = open_store(pg_url)
    yield repo
    repo.engine.dispose()


@pytest.fixture
def spawn(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `foxbatch poll` workers on the test database; kill what is left at the end."""
    started: list[WorkerProcess] = []

    def start(base_url: str, *args: str, api_key: str = "sk-test") -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        env = {**os.environ, "FOXAPI_BASE_URL": base_url, "FOXAPI_API_KEY": api_key}
        command = [sys.executable, "-m", "foxbatch", "--db", pg_url, "poll", "--job", "job",
                   "--until-done", *args]
        with log.open("wb") as err:
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=err)
        started.append(WorkerProcess(process, log))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.signal(signal.SIGCONT)
            worker.process.kill()
            worker.process.wait()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `condition` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def worker_id(repo: Repository, worker: WorkerProcess) -> str:
    """The lease owner id a worker process registered under."""
    return wait_for(lambda: next((w.id for w in repo.list_workers()
                                  if w.pid == worker.process.pid), None),
                    f"worker {worker.process.pid} to register")


def held_by(repo: Repository, job_id: int, owner: str) -> list[dict[str, Any]]:
    """The rows `owner` holds a lease on now."""
    return [dict(i) for i in repo.iter_items(job_id)
            if i["lease_owner"] == owner and i["lease_token"] is not None]


def workers_cli(pg_url: str) -> dict[str, dict[str, Any]]:
    """`foxbatch workers --json`, by worker id."""
    done = subprocess.run([sys.executable, "-m", "foxbatch", "--db", pg_url, "workers",
                           "--json"], capture_output=True, text=True, timeout=60, check=True)
    return {w["id"]: w for w in json.loads(done.stdout)}


def assert_no_row_was_owned_twice(repo: Repository, job_id: int, claim_lease: float) -> None:
    """Attempt n+1 of a row was claimed only after attempt n had ended, and an attempt ended by
    someone other than its worker (a rescue) ended only after its claim could have expired.

    Every claim and every change of an attempt row is fenced by the lease token, so the
    attempts table is the exact record of who owned a row when: an attempt is claimed (its
    `sent_at`, or the POST time recorded with the task id, later still) and ends (`finished_at`)
    inside its owner's ownership.
    """
    for item in repo.iter_items(job_id):
        rows = repo.attempts_of(item["id"])
        assert [a["number"] for a in rows] == list(range(1, item["attempts"] + 1)), item
        for earlier, later in zip(rows, rows[1:], strict=False):
            assert earlier["finished_at"] is not None, earlier
            assert earlier["finished_at"] <= later["sent_at"], (earlier, later)
            if earlier["error"] == RESCUED:
                assert earlier["finished_at"] - earlier["sent_at"] >= claim_lease, earlier
        if item["status"] == "succeeded":
            assert (rows[-1]["outcome"], rows[-1]["task_id"]) == ("succeeded", item["task_id"])


def assert_duplicates_only_where_in_doubt(repo: Repository, job_id: int,
                                          stats: dict[str, Any]) -> None:
    """Every task beyond a row's first was created by a submit reported as in doubt."""
    for item in repo.iter_items(job_id):
        created = stats["tasks_by_hash"].get(item["request_hash"], 0)
        assert created <= 1 + item["in_doubt_resubmits"], dict(item)
    assert stats["duplicates"] <= in_doubt_total(repo, job_id)


def sim_stats(base_url: str) -> dict[str, Any]:
    return httpx.get(f"{base_url}/_sim/stats", timeout=10).json()


# -- three workers, one killed --------------------------------------------------------------

KILL_LEASE = 3.0
ROWS = 150


def kill_while_holding_rows(repo: Repository, job_id: int, worker: WorkerProcess,
                            owner: str) -> float:
    """Freeze the worker until it is caught holding claims, then SIGKILL it; return when."""
    for _ in range(400):
        worker.signal(signal.SIGSTOP)
        if held_by(repo, job_id, owner):
            worker.signal(signal.SIGKILL)
            worker.process.wait()
            return time.time()
        worker.signal(signal.SIGCONT)
        time.sleep(0.02)
    pytest.fail("the worker never held a claim")


def test_three_workers_one_killed_every_row_gets_its_own_answer_once(store, spawn, pg_url):
    job_id = seed_job(store, ROWS)
    config = SimConfig(seed=21, latency_median=0.4, latency_sigma=0.5, p5xx_submit_after=0.03,
                       pdrop_submit=0.02, p5xx_submit_before=0.02, p5xx_get=0.05,
                       empty_result_polls=1)
    with serve_in_subprocess(config) as url:
        args = ("--lease-seconds", str(KILL_LEASE), "--concurrency", "16",
                "--max-attempts", "10")
        workers = [spawn(url, *args) for _ in range(3)]
        owners = [worker_id(store, w) for w in workers]
        wait_for(lambda: store.counts(job_id)["succeeded"] >= ROWS // 5, "a fifth of the rows")
        killed_at = kill_while_holding_rows(store, job_id, workers[0], owners[0])
        time.sleep(0.3)  # anything the dead worker had in flight to the database is gone now
        orphans = held_by(store, job_id, owners[0])
        for worker in workers[1:]:
            worker.finish(60)
        stats = sim_stats(url)

    assert store.counts(job_id)["succeeded"] == ROWS
    assert assert_answers_are_their_own(store, job_id) == ROWS
    assert_duplicates_only_where_in_doubt(store, job_id, stats)
    assert_no_row_was_owned_twice(store, job_id, EngineOptions(lease_seconds=KILL_LEASE)
                                  .claim_lease)
    for orphan in orphans:  # taken over by the others, within the lease, in doubt if mid-submit
        attempts = store.attempts_of(orphan["id"])
        if orphan["status"] == "submitting":
            dead = attempts[orphan["attempts"] - 1]
            assert (dead["worker"], dead["error"], dead["in_doubt"]) == (owners[0], RESCUED, True)
            assert dead["finished_at"] - killed_at <= KILL_LEASE
        assert attempts[-1]["outcome"] == "succeeded"
    time.sleep(max(0.0, killed_at + KILL_LEASE - time.time()))
    listed = workers_cli(pg_url)
    assert [listed[o]["state"] for o in owners] == ["dead", "stopped", "stopped"]
    assert listed[owners[0]]["held"] == {"submitting": 0, "polling": 0}


# -- fencing: a paused worker -----------------------------------------------------------------

FENCE_LEASE = 2.0


class GatedSimulator(Simulator):
    """The simulator, holding every submit made with a given API key until its gate opens."""

    def __init__(self, config: SimConfig, keys: tuple[str, ...]):
        super().__init__(config)
        self.gates = {key.encode(): threading.Event() for key in keys}
        self.held: Counter[bytes] = Counter()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        gate = self._gate(scope)
        if gate is not None:
            key, event = gate
            self.held[key] += 1
            while not event.is_set():
                await asyncio.sleep(0.01)
        await super().app(scope, receive, send)

    def open(self, key: str) -> None:
        self.gates[key.encode()].set()

    def waiting(self, key: str) -> int:
        return 0 if self.gates[key.encode()].is_set() else self.held[key.encode()]

    def _gate(self, scope: dict[str, Any]) -> tuple[bytes, threading.Event] | None:
        if scope["type"] != "http" or scope["path"] != "/v1/llm/generations":
            return None
        auth = dict(scope["headers"]).get(b"authorization", b"")
        key = auth.removeprefix(b"Bearer ")
        return (key, self.gates[key]) if key in self.gates else None


def pause_outside_transactions(worker: WorkerProcess, pg_url: str) -> None:
    """SIGSTOP the worker at a moment it has no statement or transaction open: a frozen
    transaction would hold its row locks (until the server ends it after 10 s)."""
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    database = dsn.rsplit("/", 1)[1]
    busy = ("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND pid <> pg_backend_pid() AND state <> 'idle'")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(100):
            worker.signal(signal.SIGSTOP)
            time.sleep(0.05)  # let the server take in whatever the worker had sent
            if conn.execute(busy, (database,)).fetchone() == (0,):
                return
            worker.signal(signal.SIGCONT)
            time.sleep(0.01)
    pytest.fail("the worker always had a transaction open")


def test_a_paused_worker_cannot_overwrite_the_new_owners_work(store, spawn, pg_url):
    job_id = seed_job(store, 12)
    sim = GatedSimulator(SimConfig(seed=22, latency_median=0.2), keys=("sk-a", "sk-b"))
    args = ("--lease-seconds", str(FENCE_LEASE))
    with serve_in_thread(sim) as url:
        # a claims 4 rows; its POSTs are held by the simulator: its claims are in flight.
        a = spawn(url, *args, "--concurrency", "4", api_key="sk-a")
        a_id = worker_id(store, a)
        wait_for(lambda: sim.waiting("sk-a") == 4, "a's four submits")
        pause_outside_transactions(a, pg_url)
        taken = {i["id"] for i in held_by(store, job_id, a_id)}
        assert len(taken) == 4 and all(store.attempts_of(i)[0]["outcome"] == "sending"
                                       for i in taken)
        # b takes a's rows over once a's leases expire, and holds all 12 in flight.
        b = spawn(url, *args, "--concurrency", "16", api_key="sk-b")
        b_id = worker_id(store, b)
        wait_for(lambda: sim.waiting("sk-b") == 12, "b holding every row")
        assert {i["id"] for i in held_by(store, job_id, b_id)} == {
            i["id"] for i in store.iter_items(job_id)}
        # a's POSTs now create their tasks; a wakes up to answers for rows it no longer owns.
        sim.open("sk-a")
        wait_for(lambda: sim.stats()["tasks_created"] == 4, "a's four tasks")
        a.signal(signal.SIGCONT)
        wait_for(lambda: "4 result(s) not recorded" in a.log_text(), "a's refused results")
        resumed = time.monotonic()
        # b's claims are older than a claim lease by now: only b's heartbeat keeps them, from
        # b's own rescues and from a's, every 0.2 s now that a is back.
        wait_for(lambda: time.monotonic() - resumed > FENCE_LEASE, "a lease", 10)
        assert len(held_by(store, job_id, b_id)) == 12
        assert in_doubt_total(store, job_id) == 4
        assert all(i["task_id"] is None for i in store.iter_items(job_id))
        sim.open("sk-b")
        b.finish(30)
        a.finish(30)
        stats = sim.stats()

    assert assert_answers_are_their_own(store, job_id) == 12
    assert (stats["tasks_created"], stats["duplicates"], in_doubt_total(store, job_id)) == (
        16, 4, 4)
    for item in store.iter_items(job_id):
        attempts = store.attempts_of(item["id"])
        if item["id"] in taken:  # a's late task is on a's attempt, the row holds b's
            stale, final = attempts
            assert (stale["worker"], stale["outcome"], stale["error"]) == (
                a_id, "in_doubt", RESCUED)
            assert stale["task_id"] is not None and stale["task_id"] != item["task_id"]
        else:
            [final] = attempts
            assert item["in_doubt_resubmits"] == 0
        assert (final["worker"], final["task_id"]) == (b_id, item["task_id"])
    assert_no_row_was_owned_twice(store, job_id, EngineOptions(lease_seconds=FENCE_LEASE)
                                  .claim_lease)
    listed = workers_cli(pg_url)
    assert (listed[a_id]["state"], listed[b_id]["state"]) == ("stopped", "stopped")


# -- the shared rate limit ------------------------------------------------------------------

RPS = 50.0
ROWS_RATED = 100


def sample_requests(url: str, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    """Every 0.2 s: (time, API requests the simulator has received so far)."""
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            stats = client.get("/_sim/stats").json()
            out.append((time.monotonic(), stats["submits"] + stats["polls"]))
            stop.wait(0.2)


def busiest_window(samples: list[tuple[float, int]], seconds: float) -> float:
    """The highest request rate over any `seconds`-long stretch between two samples."""
    rates = [(n1 - n0) / (t1 - t0) for i, (t0, n0) in enumerate(samples)
             for t1, n1 in samples[i + 1:] if t1 - t0 >= seconds]
    return max(rates)


def test_workers_share_one_rate_budget(store, spawn):
    job_id = seed_job(store, ROWS_RATED)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    with serve_in_subprocess(SimConfig(seed=23)) as url:
        sampler = threading.Thread(target=sample_requests, args=(url, stop, samples))
        sampler.start()
        try:
            workers = [spawn(url, "--rps", str(RPS), "--concurrency", "32") for _ in range(3)]
            for worker in workers:
                worker.finish(60)
        finally:
            stop.set()
            sampler.join()
    assert store.counts(job_id)["succeeded"] == ROWS_RATED
    busy = [s for s, nxt in zip(samples, samples[1:], strict=False) if nxt[1] > s[1]]
    first, last = busy[0], busy[-1]
    overall = (last[1] - first[1]) / (last[0] - first[0])
    assert 0.75 * RPS <= overall <= 1.05 * RPS
    assert busiest_window(busy, 2.0) <= 1.15 * RPS


# -- batch claims under contention ----------------------------------------------------------


def claim_until_done(repo: Repository, name: str, owners: dict[tuple[str, int], list[str]],
                     lock: threading.Lock, failed: threading.Event) -> None:
    """Claim submits and polls in batches of 8, heartbeat, and record outcomes, until no row
    is left; note who claimed what."""
    try:
        while not failed.is_set():
            submits = repo.claim_queued(name, 8, lease_seconds=30)
            polls = repo.claim_due_polls(name, 8, lease_seconds=30)
            if not submits and not polls:
                if not repo.has_active_rows():
                    return
                continue
            with lock:
                for kind, claims in (("submit", submits), ("poll", polls)):
                    for claim in claims:
                        owners[(kind, claim.item_id)].append(name)
            assert repo.renew_leases(name, [*submits, *polls], lease_seconds=30) == len(
                submits) + len(polls)
            now = time.time()
            repo.apply([
                *(TaskCreated(c.item_id, c.lease_token, c.attempt, f"t{c.item_id}", now, 0.0)
                  for c in submits),
                *(TaskSucceeded(c.item_id, c.lease_token, c.attempt, "{}", "ok", "stop",
                                "gpt-5.4", 1, 1, 2, now) for c in polls)])
    except BaseException:
        failed.set()
        raise


def test_batch_claims_under_contention_never_overlap(store):
    job_id = seed_job(store, 400)
    owners: dict[tuple[str, int], list[str]] = defaultdict(list)
    lock, failed = threading.Lock(), threading.Event()
    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(claim_until_done, store, f"w{i}", owners, lock, failed)
                   for i in range(4)]
        for future in running:
            future.result(timeout=60)
    assert store.counts(job_id)["succeeded"] == 400
    assert len(owners) == 800 and all(len(names) == 1 for names in owners.values())
    assert len({names[0] for names in owners.values()}) == 4


def test_a_worker_stuck_inside_a_transaction_loses_its_locks(pg_url):
    """PostgreSQL ends a session idle inside a transaction (its worker paused mid-transaction),
    so its row locks cannot hold up the other workers' rescues and writes for long."""
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        setting = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar()
    engine.dispose()
    assert setting == f"{IDLE_IN_TRANSACTION_MS // 1000}s"
