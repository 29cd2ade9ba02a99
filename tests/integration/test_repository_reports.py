"""The repository's reads and operator writes behind status, jobs, retry and cancel."""

from __future__ import annotations

import time

from foxbatch.models import ALL_STATUSES
from foxbatch.store.records import Fail, RequestChange, TaskCreated, TaskSucceeded
from tests.engine_helpers import seed_job


def fail_all(repo, job_id, code="task_failed", message="boom"):
    claims = repo.claim_queued("w", 100, lease_seconds=30, job_ids=[job_id])
    repo.apply([Fail(c.item_id, c.lease_token, "submitting", c.attempt, "failed", code,
                     f"{message} {c.row_key}") for c in claims])
    return claims


def test_counts_by_job_and_error_counts(repo):
    first, second = seed_job(repo, 3, name="a"), seed_job(repo, 2, name="b")
    fail_all(repo, first)
    counts = repo.counts_by_job()
    assert counts[first] == {s: (3 if s == "failed" else 0) for s in ALL_STATUSES}
    assert counts[second]["queued"] == 2 and list(counts[second]) == list(ALL_STATUSES)
    [error] = repo.error_counts(first)
    assert (error.code, error.count, error.example) == ("task_failed", 3, "boom 1")


def test_job_stats_sums_attempts_tokens_and_recent_finishes(repo):
    job_id = seed_job(repo, 2)
    claims = repo.claim_queued("w", 10, lease_seconds=30, job_ids=[job_id])
    now = time.time()
    repo.apply([TaskCreated(c.item_id, c.lease_token, c.attempt, f"t{c.item_id}", now, 0.0)
                for c in claims])
    polls = repo.claim_due_polls("w", 10, lease_seconds=30, job_ids=[job_id])
    repo.apply([TaskSucceeded(p.item_id, p.lease_token, p.attempt, "{}", "hi", "stop", "m",
                              5, 7, 12, now) for p in polls])
    stats = repo.job_stats(job_id, since=now - 1)
    assert (stats.attempts, stats.prompt_tokens, stats.completion_tokens) == (2, 10, 14)
    assert stats.finished_since == 2 and stats.first_submitted_at == now
    assert repo.job_stats(job_id, since=now + 1).finished_since == 0


def test_requeue_finished_renews_the_budget_and_keeps_history(repo):
    job_id = seed_job(repo, 2)
    fail_all(repo, job_id)
    assert repo.requeue_finished(job_id, ["failed"], codes=["other"]) == 0
    assert repo.requeue_finished(job_id, ["failed"]) == 2
    row = repo.item_by_key(job_id, "1")
    assert (row["status"], row["attempts"], row["free_attempts"]) == ("queued", 1, 1)
    assert row["error_code"] is None
    assert [a["outcome"] for a in repo.attempts_of(row["id"])] == ["failed"]
    [claim, _] = repo.claim_queued("w", 10, lease_seconds=30, job_ids=[job_id])
    assert (claim.attempt, claim.budget_used) == (2, 1)


def test_requeue_changed_is_compare_and_set(repo):
    job_id = seed_job(repo, 1)
    [claim] = fail_all(repo, job_id)
    change = RequestChange(claim.item_id, "failed", '{"model":"x"}', "h" * 64, "x")
    assert repo.requeue_changed([change]) == 1
    assert repo.requeue_changed([change]) == 0  # no longer failed
    row = repo.item_by_key(job_id, "1")
    assert (row["request"], row["model"], row["status"]) == ('{"model":"x"}', "x", "queued")


def test_cancel_discards_in_flight_rows_and_refuses_their_late_outcomes(repo):
    job_id = seed_job(repo, 3)
    submitting = repo.claim_queued("w", 2, lease_seconds=30, job_ids=[job_id])
    now = time.time()
    repo.apply([TaskCreated(submitting[0].item_id, submitting[0].lease_token, 1, "t1", now,
                            0.0)])
    [poll] = repo.claim_due_polls("w", 10, lease_seconds=30, job_ids=[job_id])
    assert repo.cancel_items(job_id, ["queued"]) == 1
    assert repo.cancel_items(job_id, ["submitting", "pending"]) == 2
    late = repo.apply([
        TaskSucceeded(poll.item_id, poll.lease_token, 1, "{}", "hi", "stop", "m", 1, 1, 2, now),
        TaskCreated(submitting[1].item_id, submitting[1].lease_token, 1, "t2", now, now)])
    assert (late.applied, late.refused) == (0, 2)
    assert repo.counts(job_id)["cancelled"] == 3
    [attempt] = repo.attempts_of(submitting[1].item_id)
    assert (attempt["outcome"], attempt["task_id"]) == ("cancelled", "t2")
    assert repo.attempts_of(poll.item_id)[0]["outcome"] == "cancelled"
