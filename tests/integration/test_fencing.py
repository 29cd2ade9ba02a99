"""Fencing in the store (SQLite and PostgreSQL): once another worker has taken a row over, every
write of the worker that lost it is refused, in `items` and in `attempts` alike; only the id of a
task FoxAPI created for it still lands on its own attempt row (the audit trail)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from foxbatch.store import Repository, open_store
from foxbatch.store.records import (
    Fail,
    PollClaim,
    PollLater,
    Requeue,
    SubmitClaim,
    TaskCreated,
    TaskSucceeded,
)
from tests.integration.test_repository import Clock, seeded

LEASE = 10.0


@pytest.fixture
def clocked(db_url) -> Iterator[tuple[Repository, Clock]]:
    clock = Clock()
    repo = Repository(open_store(db_url).engine, clock=clock)
    yield repo, clock
    repo.engine.dispose()


def taken_over_mid_submit(repo: Repository, clock: Clock) -> tuple[SubmitClaim, SubmitClaim]:
    """Worker a claims the row and goes quiet; its lease expires, it is rescued (in doubt) and
    worker b claims it again. Returns (a's stale claim, b's claim)."""
    seeded(repo, 1)
    [stale] = repo.claim_queued("a", 1, lease_seconds=LEASE)
    clock.now += LEASE + 1
    assert repo.rescue_expired() == 1
    clock.now += 1
    [fresh] = repo.claim_queued("b", 1, lease_seconds=LEASE)
    return stale, fresh


def taken_over_mid_poll(repo: Repository, clock: Clock) -> tuple[PollClaim, PollClaim]:
    """Worker a claims a poll and goes quiet past its lease; worker b claims the poll again."""
    seeded(repo, 1)
    [claim] = repo.claim_queued("w", 1, lease_seconds=LEASE)
    repo.apply([TaskCreated(claim.item_id, claim.lease_token, 1, "task-1", clock.now, clock.now)])
    [stale] = repo.claim_due_polls("a", 1, lease_seconds=LEASE)
    clock.now += LEASE + 1
    [fresh] = repo.claim_due_polls("b", 1, lease_seconds=LEASE)
    return stale, fresh


def stale_submit_outcomes(c: SubmitClaim) -> list:
    return [
        TaskCreated(c.item_id, c.lease_token, c.attempt, "task-stale", 1.0, 0.0),
        Requeue(c.item_id, c.lease_token, "submitting", c.attempt, "in_doubt", 0.0,
                "server_error", "late 500", http_status=500, in_doubt=True),
        Fail(c.item_id, c.lease_token, "submitting", c.attempt, "rejected", "invalid_param",
             "late 422", http_status=422),
    ]


def stale_poll_outcomes(c: PollClaim) -> list:
    return [
        TaskSucceeded(c.item_id, c.lease_token, c.attempt, "{}", "stale answer", "stop",
                      "gpt-5.4", 1, 1, 2, finished_at=5.0),
        PollLater(c.item_id, c.lease_token, next_poll_at=0.0),
        Requeue(c.item_id, c.lease_token, "pending", c.attempt, "task_gone", 0.0,
                "task_not_found", "late 404"),
        Fail(c.item_id, c.lease_token, "pending", c.attempt, "task_failed", "task_failed",
             "late failure"),
    ]


def snapshot(repo: Repository, item_id: int) -> tuple[dict, list[dict]]:
    item = repo.item_by_key(repo.list_jobs()[0].id, "1")
    assert item is not None and item["id"] == item_id
    return dict(item), [dict(a) for a in repo.attempts_of(item_id)]


@pytest.mark.parametrize("index", range(3), ids=["created", "requeue", "fail"])
def test_a_stale_submit_outcome_changes_nothing_but_the_audit_trail(clocked, index):
    repo, clock = clocked
    stale, fresh = taken_over_mid_submit(repo, clock)
    item_before, attempts_before = snapshot(repo, stale.item_id)
    outcome = stale_submit_outcomes(stale)[index]
    assert repo.apply([outcome]).refused == 1
    item_after, attempts_after = snapshot(repo, stale.item_id)
    assert item_after == item_before
    assert (item_after["status"], item_after["lease_token"]) == ("submitting", fresh.lease_token)
    rescued, current = attempts_after
    assert current == attempts_before[1]  # the new owner's attempt is untouched
    expected = dict(attempts_before[0])
    if isinstance(outcome, TaskCreated):
        expected.update(task_id="task-stale", http_status=200)  # recorded, still in doubt
    assert rescued == expected
    assert (rescued["outcome"], rescued["in_doubt"]) == ("in_doubt", True)


@pytest.mark.parametrize("index", range(4), ids=["succeeded", "later", "requeue", "fail"])
def test_a_stale_poll_outcome_changes_nothing(clocked, index):
    repo, clock = clocked
    stale, fresh = taken_over_mid_poll(repo, clock)
    before = snapshot(repo, stale.item_id)
    assert repo.apply([stale_poll_outcomes(stale)[index]]).refused == 1
    assert snapshot(repo, stale.item_id) == before
    item, [attempt] = before
    assert (item["status"], item["lease_token"], attempt["outcome"]) == (
        "pending", fresh.lease_token, "created")


def test_stale_releases_and_heartbeats_change_nothing(clocked):
    repo, clock = clocked
    stale, fresh = taken_over_mid_submit(repo, clock)
    before = snapshot(repo, stale.item_id)
    assert repo.renew_leases("a", [stale], lease_seconds=LEASE) == 0
    assert repo.release_submit_claims([stale]) == 0
    assert snapshot(repo, stale.item_id) == before
    assert repo.renew_leases("b", [fresh], lease_seconds=LEASE) == 1


def test_stale_poll_releases_and_heartbeats_change_nothing(clocked):
    repo, clock = clocked
    stale, fresh = taken_over_mid_poll(repo, clock)
    before = snapshot(repo, stale.item_id)
    assert repo.renew_leases("a", [stale], lease_seconds=LEASE) == 0
    assert repo.release_poll_claims([stale]) == 0
    assert snapshot(repo, stale.item_id) == before


def test_a_heartbeat_keeps_a_claim_from_being_rescued(clocked):
    repo, clock = clocked
    seeded(repo, 1)
    [claim] = repo.claim_queued("a", 1, lease_seconds=LEASE)
    for _ in range(3):
        clock.now += LEASE * 0.6
        assert repo.renew_leases("a", [claim], lease_seconds=LEASE) == 1
        assert repo.rescue_expired() == 0
    clock.now += LEASE + 1
    assert repo.rescue_expired() == 1


def test_the_new_owner_finishes_the_row(clocked):
    repo, clock = clocked
    stale, fresh = taken_over_mid_submit(repo, clock)
    repo.apply(stale_submit_outcomes(stale)[:1])
    assert repo.apply([TaskCreated(fresh.item_id, fresh.lease_token, fresh.attempt, "task-b",
                                   clock.now, clock.now)]).applied == 1
    item, (first, second) = snapshot(repo, fresh.item_id)
    assert (item["status"], item["task_id"], item["in_doubt_resubmits"]) == (
        "pending", "task-b", 1)
    assert (first["worker"], first["task_id"], first["outcome"]) == ("a", "task-stale", "in_doubt")
    assert (second["worker"], second["task_id"], second["outcome"]) == ("b", "task-b", "created")


def test_workers_are_recorded_with_their_heartbeats_and_claims(clocked):
    repo, clock = clocked
    job_id = seeded(repo, 3)
    repo.register_worker("host:1:a", host="host", pid=1, job_ids=[job_id], lease_seconds=30)
    repo.register_worker("host:2:b", host="host", pid=2, job_ids=None, lease_seconds=30)
    claims = repo.claim_queued("host:1:a", 2, lease_seconds=24)
    repo.apply([TaskCreated(claims[0].item_id, claims[0].lease_token, 1, "t", clock.now,
                            clock.now)])
    repo.claim_due_polls("host:1:a", 1, lease_seconds=24)
    clock.now += 20
    repo.touch_worker("host:2:b")
    clock.now += 15
    by_id = {w.id: w for w in repo.list_workers()}
    a, b = by_id["host:1:a"], by_id["host:2:b"]
    assert (a.job_ids, a.submitting, a.polling, a.state(clock.now)) == ([job_id], 1, 1, "dead")
    assert (b.job_ids, b.submitting, b.polling, b.state(clock.now)) == (None, 0, 0, "live")
    repo.stop_worker("host:2:b")
    assert {w.id: w.state(clock.now) for w in repo.list_workers()}["host:2:b"] == "stopped"
