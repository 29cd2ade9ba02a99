"""The repository on real SQLite files and a real PostgreSQL database."""

from __future__ import annotations

import json

import pytest

from foxbatch.models import OnDoubt, RequestSpec, request_hash
from foxbatch.store import Repository
from foxbatch.store.records import (
    Fail,
    NewItem,
    PollLater,
    Requeue,
    TaskCreated,
    TaskSucceeded,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_item(key: str, index: int, prompt: str | None = None) -> NewItem:
    spec = RequestSpec(model="gpt-5.4", prompt=prompt or f"prompt {key}", max_tokens=32)
    body = spec.canonical_json()
    return NewItem(row_key=key, row_index=index, input_json=json.dumps({"id": key}),
                   request_json=body, request_hash=request_hash(body), model=spec.model)


def seeded(repo: Repository, n: int = 10) -> int:
    job = repo.ensure_job("job")
    repo.add_items(job.id, [make_item(str(i), i) for i in range(1, n + 1)])
    return job.id


def test_ensure_job_is_idempotent(repo):
    first = repo.ensure_job("nightly", defaults={"model": "gpt-5.4"})
    again = repo.ensure_job("nightly")
    assert first.id == again.id and again.defaults == {"model": "gpt-5.4"}
    assert [j.name for j in repo.list_jobs()] == ["nightly"]


def test_add_items_is_idempotent_by_key(repo):
    job = repo.ensure_job("job")
    rows = [make_item(str(i), i) for i in range(1, 101)]
    first = repo.add_items(job.id, rows, chunk_size=30)
    again = repo.add_items(job.id, rows, chunk_size=30)
    assert (first.inserted, first.present) == (100, 0)
    assert (again.inserted, again.present, again.changed) == (0, 100, [])
    assert repo.counts(job.id)["queued"] == 100


def test_changed_rows_are_reported_and_replaced_only_on_request(repo):
    job = repo.ensure_job("job")
    repo.add_items(job.id, [make_item("a", 1), make_item("b", 2)])
    changed = [make_item("a", 1, prompt="new text"), make_item("b", 2), make_item("c", 3)]
    result = repo.add_items(job.id, changed)
    assert (result.inserted, result.present, result.changed) == (1, 2, ["a"])
    assert "prompt a" in repo.item_by_key(job.id, "a")["request"]
    replaced = repo.add_items(job.id, changed, replace=True)
    assert replaced.replaced == 1
    assert "new text" in repo.item_by_key(job.id, "a")["request"]


def test_claim_records_attempt_before_send_and_task_id_after(repo):
    job_id = seeded(repo, 3)
    claims = repo.claim_queued("w1", 2, lease_seconds=30)
    assert [c.row_key for c in claims] == ["1", "2"]
    attempt = repo.attempts_of(claims[0].item_id)
    assert [(a["number"], a["outcome"], a["task_id"]) for a in attempt] == [(1, "sending", None)]
    done = repo.apply([TaskCreated(c.item_id, c.lease_token, c.attempt, f"task-{c.row_key}",
                                   sent_at=1.0, next_poll_at=0.0) for c in claims])
    assert done.applied == 2
    assert repo.attempts_of(claims[0].item_id)[0]["task_id"] == "task-1"
    counts = repo.counts(job_id)
    assert (counts["pending"], counts["queued"], counts["submitting"]) == (2, 1, 0)


def test_full_life_of_a_row(repo):
    job_id = seeded(repo, 1)
    [claim] = repo.claim_queued("w", 5, lease_seconds=30)
    repo.apply([TaskCreated(claim.item_id, claim.lease_token, 1, "t1", 1.0, 0.0)])
    [poll] = repo.claim_due_polls("w", 5, lease_seconds=30)
    assert poll.task_id == "t1" and poll.polls == 1
    repo.apply([PollLater(poll.item_id, poll.lease_token, next_poll_at=0.0)])
    [poll] = repo.claim_due_polls("w", 5, lease_seconds=30)
    assert poll.polls == 2
    repo.apply([TaskSucceeded(poll.item_id, poll.lease_token, 1, '{"x":1}', "hello", "stop",
                              "gpt-5.4", 3, 4, 7, finished_at=2.0)])
    row = repo.item_by_key(job_id, "1")
    assert (row["status"], row["output"], row["total_tokens"]) == ("succeeded", "hello", 7)
    assert repo.attempts_of(row["id"])[0]["outcome"] == "succeeded"
    assert repo.claim_due_polls("w", 5, lease_seconds=30) == []
    assert repo.claim_queued("w", 5, lease_seconds=30) == []
    assert not repo.has_active_rows()


def test_stale_compare_and_set_is_refused(repo):
    seeded(repo, 1)
    [claim] = repo.claim_queued("w", 1, lease_seconds=30)
    stale = TaskCreated(claim.item_id, "0" * 32, claim.attempt, "t-stale", 1.0, 0.0)
    assert repo.apply([stale]).refused == 1
    assert repo.apply([TaskCreated(claim.item_id, claim.lease_token, 1, "t", 1.0, 0.0)]).applied
    # A second application of the same transition finds the row no longer submitting.
    again = TaskCreated(claim.item_id, claim.lease_token, 1, "t2", 1.0, 0.0)
    assert repo.apply([again]).refused == 1


def test_expired_submit_leases_come_back_in_doubt(db_url):
    from foxbatch.store import open_store

    clock = Clock()
    repo = Repository(open_store(db_url).engine, clock=clock)
    job_id = seeded(repo, 2)
    claims = repo.claim_queued("dead-worker", 2, lease_seconds=30)
    assert repo.rescue_expired() == 0
    clock.now += 31
    assert repo.rescue_expired() == 2
    row = repo.item_by_key(job_id, "1")
    assert (row["status"], row["in_doubt_resubmits"]) == ("queued", 1)
    assert repo.attempts_of(row["id"])[0]["in_doubt"]
    # The dead worker wakes up: its late write is refused.
    late = TaskCreated(claims[0].item_id, claims[0].lease_token, 1, "late", 1.0, 0.0)
    assert repo.apply([late]).refused == 1
    again = repo.claim_queued("w2", 5, lease_seconds=30)
    assert [c.attempt for c in again] == [2, 2]
    repo.engine.dispose()


def test_hold_policy_parks_in_doubt_rows_as_failed(db_url):
    from foxbatch.store import open_store

    clock = Clock()
    repo = Repository(open_store(db_url).engine, clock=clock)
    job_id = seeded(repo, 1)
    repo.claim_queued("dead", 1, lease_seconds=5)
    clock.now += 6
    assert repo.rescue_expired(on_doubt=OnDoubt.HOLD) == 1
    row = repo.item_by_key(job_id, "1")
    assert (row["status"], row["error_code"]) == ("failed", "in_doubt_held")
    repo.engine.dispose()


def test_expired_poll_claims_become_due_again(db_url):
    from foxbatch.store import open_store

    clock = Clock()
    repo = Repository(open_store(db_url).engine, clock=clock)
    seeded(repo, 1)
    [claim] = repo.claim_queued("w", 1, lease_seconds=30)
    repo.apply([TaskCreated(claim.item_id, claim.lease_token, 1, "t", clock.now, clock.now)])
    [first] = repo.claim_due_polls("w1", 1, lease_seconds=10)
    assert repo.claim_due_polls("w2", 1, lease_seconds=10) == []
    clock.now += 11
    [second] = repo.claim_due_polls("w2", 1, lease_seconds=10)
    assert second.lease_token != first.lease_token
    assert repo.apply([PollLater(first.item_id, first.lease_token, clock.now)]).refused == 1
    repo.engine.dispose()


def test_requeue_and_fail(repo):
    job_id = seeded(repo, 2)
    a, b = repo.claim_queued("w", 2, lease_seconds=30)
    result = repo.apply([
        Requeue(a.item_id, a.lease_token, "submitting", a.attempt, "in_doubt", 0.0,
                "server_error", "boom", http_status=500, in_doubt=True),
        Fail(b.item_id, b.lease_token, "submitting", b.attempt, "rejected", "invalid_param",
             "bad", http_status=422),
    ])
    assert result.applied == 2
    first, second = repo.item_by_key(job_id, "1"), repo.item_by_key(job_id, "2")
    assert (first["status"], first["in_doubt_resubmits"]) == ("queued", 1)
    assert (second["status"], second["error_code"]) == ("failed", "invalid_param")
    assert repo.attempts_of(second["id"])[0]["http_status"] == 422


def test_release_claims_undoes_unsent_attempts(repo):
    job_id = seeded(repo, 2)
    claims = repo.claim_queued("w", 2, lease_seconds=30)
    assert repo.release_submit_claims(claims) == 2
    row = repo.item_by_key(job_id, "1")
    assert (row["status"], row["attempts"]) == ("queued", 0)
    assert repo.attempts_of(row["id"]) == []
    assert len(repo.claim_queued("w", 5, lease_seconds=30)) == 2


def test_counts_and_input_order(repo):
    job = repo.ensure_job("job")
    repo.add_items(job.id, [make_item(k, i) for i, k in [(3, "c"), (1, "a"), (2, "b")]])
    assert repo.counts(job.id) == {"invalid": 0, "queued": 3, "submitting": 0, "pending": 0,
                                   "succeeded": 0, "failed": 0, "cancelled": 0}
    assert [r["row_key"] for r in repo.iter_items(job.id, page=2)] == ["a", "b", "c"]


def test_next_due_at(repo):
    seeded(repo, 1)
    assert repo.next_due_at() == 0.0
    [claim] = repo.claim_queued("w", 1, lease_seconds=30)
    repo.apply([TaskCreated(claim.item_id, claim.lease_token, 1, "t", 1.0, 12345.0)])
    assert repo.next_due_at() == 12345.0


@pytest.mark.parametrize("n", [0])
def test_claim_with_zero_limit_claims_nothing(repo, n):
    seeded(repo, 1)
    assert repo.claim_queued("w", n, lease_seconds=1) == []


def test_work_is_found_across_many_jobs_and_only_in_the_jobs_asked_for(repo):
    """A daemon serving every job: the one job of forty with queued rows is found, its rows
    are claimed, and the earliest due time is the minimum over the jobs asked for."""
    clock = Clock()
    repo.clock = clock
    for i in range(39):
        repo.ensure_job(f"empty-{i}")
    busy = repo.ensure_job("busy")
    repo.add_items(busy.id, [make_item(str(i), i) for i in range(1, 4)])
    empty = repo.find_job("empty-0")
    assert repo.has_active_rows() and repo.has_active_rows([busy.id])
    assert not repo.has_active_rows([empty.id])
    assert repo.next_due_at() == 0.0 and repo.next_due_at([empty.id]) is None
    claims = repo.claim_queued("w", 10, lease_seconds=60)
    assert {c.job_id for c in claims} == {busy.id} and len(claims) == 3
    assert repo.claim_queued("w", 10, lease_seconds=60) == []
    assert repo.has_active_rows()  # submitting
    assert repo.next_due_at(statuses=("queued",)) is None
    assert repo.next_due_at() == clock.now + 60  # the leases expire then


def test_first_looks_planned_too_late_are_brought_forward(db_url):
    """Only rows of the model not looked at yet move, and only earlier."""
    from foxbatch.store import open_store

    clock = Clock()
    repo = Repository(open_store(db_url).engine, clock=clock)
    seeded(repo, 4)
    claims = repo.claim_queued("w", 4, lease_seconds=30)
    sent = clock.now
    repo.apply([TaskCreated(c.item_id, c.lease_token, 1, f"t{c.row_key}", sent,
                            sent + (0.1 if c.row_key == "4" else 0.8)) for c in claims])
    clock.now += 0.3
    [looked] = repo.claim_due_polls("w", 1, lease_seconds=10)  # row 4: due first
    repo.apply([PollLater(looked.item_id, looked.lease_token, sent + 5.0)])
    assert repo.bring_first_looks_forward("other-model", 0.2) == 0
    assert repo.bring_first_looks_forward("gpt-5.4", 0.2) == 3
    due = {row["row_key"]: row["next_poll_at"] - sent
           for row in repo.iter_items(claims[0].job_id)}
    assert due["1"] == due["2"] == due["3"] == pytest.approx(0.2)
    assert due["4"] == pytest.approx(5.0)  # looked at once already: its next look stays
    assert repo.bring_first_looks_forward("gpt-5.4", 0.5) == 0  # never later
    repo.engine.dispose()


def test_claims_take_rows_of_the_jobs_asked_for_only(db_url):
    """One job, several jobs, every job: each claim takes rows of those jobs and no other
    (claims over one job or every job run precompiled statements; several jobs an IN list)."""
    from foxbatch.store import open_store

    clock = Clock()
    repo = Repository(open_store(db_url).engine, clock=clock)
    a, b, c = (repo.ensure_job(name).id for name in "abc")
    for job in (a, b, c):
        repo.add_items(job, [make_item(f"{job}-{i}", i) for i in range(2)])
    only_a = repo.claim_queued("w", 10, lease_seconds=30, job_ids=[a])
    b_and_c = repo.claim_queued("w", 10, lease_seconds=30, job_ids=[b, c])
    assert {x.job_id for x in only_a} == {a} and len(only_a) == 2
    assert {x.job_id for x in b_and_c} == {b, c} and len(b_and_c) == 4
    assert repo.claim_queued("w", 10, lease_seconds=30) == []
    repo.apply([TaskCreated(x.item_id, x.lease_token, x.attempt, f"t{x.item_id}", clock.now,
                            clock.now) for x in only_a + b_and_c])
    polls_c = repo.claim_due_polls("w", 10, lease_seconds=30, job_ids=[c])
    polls_a_b = repo.claim_due_polls("w", 10, lease_seconds=30, job_ids=[a, b])
    assert {x.job_id for x in polls_c} == {c} and len(polls_c) == 2
    assert {x.job_id for x in polls_a_b} == {a, b} and len(polls_a_b) == 4
    assert repo.claim_due_polls("w", 10, lease_seconds=30) == []
    clock.now += 31  # the poll claims' leases ran out: every job's rows are due again
    again = repo.claim_due_polls("w", 4, lease_seconds=30)
    assert len(again) == 4 and all(x.polls == 2 for x in again)
    repo.engine.dispose()


@pytest.mark.parametrize("with_progress", [10, 5])
def test_a_model_is_learned_from_only_when_nearly_all_its_tasks_showed_progress(db_url,
                                                                               with_progress):
    """The least durations running tasks showed are kept on their rows; a later run starts
    from them only if nearly all of the model's recent tasks showed one (the others were done
    at their first look, and the rest would be the slow end only)."""
    from foxbatch.store import open_store

    clock = Clock()
    repo = Repository(open_store(db_url).engine, clock=clock)
    seeded(repo, 10)
    claims = repo.claim_queued("w", 10, lease_seconds=30)
    repo.apply([TaskCreated(c.item_id, c.lease_token, 1, f"t{c.row_key}", clock.now,
                            clock.now) for c in claims])
    looks = sorted(repo.claim_due_polls("w", 10, lease_seconds=30), key=lambda c: c.item_id)
    repo.apply([PollLater(c.item_id, c.lease_token, clock.now,
                          least_duration=2.0 + i if i < with_progress else None)
                for i, c in enumerate(looks)])
    done = repo.claim_due_polls("w", 10, lease_seconds=30)
    repo.apply([TaskSucceeded(c.item_id, c.lease_token, 1, "{}", "ok", "stop", "gpt-5.4", 1, 1,
                              2, finished_at=clock.now) for c in done])
    learned = repo.recent_durations()
    if with_progress == 10:
        assert sorted(learned["gpt-5.4"]) == [2.0 + i for i in range(10)]
    else:
        assert learned == {}
    repo.engine.dispose()


def test_a_claims_attempt_rows_are_inserted_as_sqlalchemy_would(repo):
    """The precompiled INSERT of a claim's attempt rows is SQLAlchemy's executemany form: on
    PostgreSQL without the RETURNING of new keys that a single-row INSERT carries."""
    from sqlalchemy import event

    seeded(repo, 3)
    sent: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    event.listen(repo.engine, "before_cursor_execute", seen)
    try:
        claims = repo.claim_queued("w", 3, lease_seconds=30)
    finally:
        event.remove(repo.engine, "before_cursor_execute", seen)
    [insert] = [s for s in sent if s.lstrip().upper().startswith("INSERT INTO ATTEMPTS")]
    assert "RETURNING" not in insert.upper()
    assert all([(a["number"], a["outcome"]) for a in repo.attempts_of(c.item_id)] == [
        (1, "sending")] for c in claims)


def test_recent_durations_are_those_of_the_last_submitted_tasks(db_url):
    """The last results of a batch are its slowest tasks: the durations a run starts from are
    those of the tasks submitted last, whatever order their results came in."""
    from foxbatch.store import open_store

    clock = Clock()
    repo = Repository(open_store(db_url).engine, clock=clock)
    seeded(repo, 10)
    claims = sorted(repo.claim_queued("w", 10, lease_seconds=30), key=lambda c: c.item_id)
    repo.apply([TaskCreated(c.item_id, c.lease_token, 1, f"t{c.row_key}", clock.now + i,
                            clock.now) for i, c in enumerate(claims)])
    looks = sorted(repo.claim_due_polls("w", 10, lease_seconds=30), key=lambda c: c.item_id)
    repo.apply([PollLater(c.item_id, c.lease_token, clock.now, least_duration=float(i))
                for i, c in enumerate(looks)])
    done = sorted(repo.claim_due_polls("w", 10, lease_seconds=30), key=lambda c: c.item_id)
    repo.apply([TaskSucceeded(c.item_id, c.lease_token, 1, "{}", "ok", "stop", "gpt-5.4", 1, 1,
                              2, finished_at=clock.now + 100 - i) for i, c in enumerate(done)])
    assert sorted(repo.recent_durations(limit=5)["gpt-5.4"]) == [5.0, 6.0, 7.0, 8.0, 9.0]
    repo.engine.dispose()
