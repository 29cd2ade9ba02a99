"""A Hypothesis state machine over the engine's steps and failures.

Workers claim, submit and poll rows of one job on a real SQLite file against the simulator app
(in-process, on a hand-moved clock). Hypothesis interleaves: claims, submits whose response
arrives or is lost, polls, group commits, tasks finishing (time passing), worker crashes (all
uncommitted memory lost), restarts, lease expiry and rescue. After every step:
- no row is held by two workers under its current lease;
- every succeeded row holds the answer to its own prompt;
- a pending or succeeded row holds the task of its latest attempt (a stale worker's late
  answer never lands);
- every task id foxbatch recorded was created by the API;
- tasks the API created that foxbatch does not know about are covered by reported in-doubt
  resubmissions, or belong to rows still `submitting` (they become in-doubt when rescued).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from foxbatch.client import FoxClient
from foxbatch.errors import InDoubtError
from foxbatch.poller import Poller
from foxbatch.ratelimit import Limiter
from foxbatch.recorder import Recorder, StoreThread
from foxbatch.schedule import PollPlanner
from foxbatch.sim import SimConfig, Simulator, expected_completion
from foxbatch.store import Repository, open_store
from foxbatch.store.records import PollClaim, SubmitClaim
from foxbatch.submitter import EngineOptions, Submitter
from tests.acceptance.crash_harness import unknown_tasks
from tests.engine_helpers import seed_job

ROWS = 4
LEASE = 5.0


class Clock:
    """Time that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class LossyClient(FoxClient):
    """A client whose next submit response can be lost after the task was created."""

    lose_next = False

    async def submit(self, body_json: str) -> str:
        task_id = await super().submit(body_json)
        if self.lose_next:
            raise InDoubtError("response lost after the task was created")
        return task_id


@dataclass
class Worker:
    """One worker process: what it holds in memory, lost when it crashes."""

    submitter: Submitter
    poller: Poller
    recorder: Recorder
    unsent: list[SubmitClaim] = field(default_factory=list)
    polls: list[PollClaim] = field(default_factory=list)


class EngineMachine(RuleBasedStateMachine):
    """Claims, submits, polls, commits, crashes and time, in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.sim = Simulator(SimConfig(seed=3, latency_median=2.0, latency_sigma=0.5,
                                       failure_rate=0.15), clock=self.clock)
        self.client = LossyClient("http://sim", "sk-test",
                                  transport=httpx.ASGITransport(app=self.sim.app))
        self.workers: list[Worker] = []
        self.started = 0

    @initialize(folder=st.just(None))
    def create_store(self, folder: None) -> None:
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        base = open_store(f"sqlite:///{self.tmp.name}/store.db")
        self.repo = Repository(base.engine, clock=self.clock)
        self.job = seed_job(self.repo, ROWS)
        self.db = StoreThread(self.repo)
        self.workers = [self._new_worker(), self._new_worker()]

    def _new_worker(self) -> Worker:
        self.started += 1
        options = EngineOptions(max_attempts=4, lease_seconds=LEASE, claim_batch=ROWS,
                                retry_base=0.5)
        limiter = Limiter(concurrency=1000)
        recorder = Recorder(self.db)
        planner = PollPlanner(rng=random.Random(self.started))
        common = (self.db, self.client, limiter, recorder, planner, options)
        owner = f"worker-{self.started}"
        return Worker(
            Submitter(*common, owner=owner, job_ids=[self.job], clock=self.clock),
            Poller(*common, owner=owner, job_ids=[self.job], clock=self.clock), recorder)

    def _run(self, coro):  # noqa: ANN001, ANN202 - test plumbing
        return self.loop.run_until_complete(coro)

    # -- rules ------------------------------------------------------------------------------

    @rule(w=st.integers(0, 1))
    def claim_rows(self, w: int) -> None:
        worker = self.workers[w]
        worker.unsent.extend(self._run(worker.submitter.claim()))

    @precondition(lambda self: any(w.unsent for w in self.workers))
    @rule(w=st.integers(0, 1), lose=st.booleans(), commit=st.booleans())
    def submit_one(self, w: int, lose: bool, commit: bool) -> None:
        worker = self.workers[w]
        if not worker.unsent:
            return
        self.client.lose_next = lose
        self._run(worker.submitter.submit(worker.unsent.pop(0)))
        if commit:
            self._run(worker.recorder.flush())

    @rule(w=st.integers(0, 1))
    def claim_polls(self, w: int) -> None:
        worker = self.workers[w]
        worker.polls.extend(self._run(worker.poller.claim()))

    @precondition(lambda self: any(w.polls for w in self.workers))
    @rule(w=st.integers(0, 1), commit=st.booleans())
    def poll_one(self, w: int, commit: bool) -> None:
        worker = self.workers[w]
        if worker.polls:
            self._run(worker.poller.poll(worker.polls.pop(0)))
        if commit:
            self._run(worker.recorder.flush())

    @rule(w=st.integers(0, 1))
    def commit(self, w: int) -> None:
        self._run(self.workers[w].recorder.flush())

    @rule(w=st.integers(0, 1))
    def crash_and_restart(self, w: int) -> None:
        self.workers[w] = self._new_worker()  # unsent claims and uncommitted outcomes are gone

    @rule(seconds=st.sampled_from([0.5, 2.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def leases_expire_and_are_rescued(self) -> None:
        self.clock.now += LEASE + 1
        self.repo.rescue_expired()

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def no_row_held_twice_under_its_current_lease(self) -> None:
        if not self.workers:
            return
        current = {item["id"]: item["lease_token"] for item in self.repo.iter_items(self.job)}
        holders: dict[int, int] = {}
        for worker in self.workers:
            for claim in [*worker.unsent, *worker.polls]:
                if current.get(claim.item_id) == claim.lease_token:
                    holders[claim.item_id] = holders.get(claim.item_id, 0) + 1
        assert all(n == 1 for n in holders.values()), holders

    @invariant()
    def answers_are_their_own_and_every_task_is_accounted_for(self) -> None:
        if not self.workers:
            return
        in_doubt = submitting = 0
        known: dict[str, int] = {}
        for item in self.repo.iter_items(self.job):
            if item["status"] == "succeeded":
                assert item["output"] == expected_completion(json.loads(item["request"]))
            in_doubt += item["in_doubt_resubmits"]
            submitting += item["status"] == "submitting"
            attempts = self.repo.attempts_of(item["id"])
            if item["status"] in ("pending", "succeeded"):  # fencing: its own latest attempt's
                assert attempts[-1]["number"] == item["attempts"]
                assert attempts[-1]["task_id"] == item["task_id"], item["row_key"]
            known[item["request_hash"]] = len({a["task_id"] for a in attempts if a["task_id"]})
        unknown = unknown_tasks(self.sim.stats()["tasks_by_hash"], known)
        assert unknown <= in_doubt + submitting, (unknown, in_doubt, submitting)

    def teardown(self) -> None:
        self._run(self.client.aclose())
        self.loop.close()
        if self.workers:
            self.db.close()
            self.repo.engine.dispose()
            self.tmp.cleanup()


EngineMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestEngineStateMachine = EngineMachine.TestCase


def test_a_stale_workers_late_answer_never_lands():
    """The interleaving the machine above looks for, spelled out: worker 0 claims, its leases
    expire and are rescued, worker 1 claims the rows again, then worker 0 submits and commits
    its stale claim. Its task is audited, but the rows keep worker 1's attempt."""
    machine = EngineMachine()
    try:
        machine.create_store(None)
        machine.claim_rows(0)
        machine.leases_expire_and_are_rescued()
        machine.claim_rows(1)
        machine.submit_one(0, lose=False, commit=True)
        machine.no_row_held_twice_under_its_current_lease()
        machine.answers_are_their_own_and_every_task_is_accounted_for()
        assert all(i["status"] == "submitting" for i in machine.repo.iter_items(machine.job))
    finally:
        machine.teardown()
