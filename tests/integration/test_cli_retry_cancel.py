"""`foxbatch retry` and `foxbatch cancel` through CliRunner, on real SQLite files."""

from __future__ import annotations

import asyncio
import json

import pytest

from foxbatch.models import request_hash
from foxbatch.sim import SimConfig, Simulator
from foxbatch.store import open_store
from foxbatch.store.records import Fail
from tests.engine_helpers import run_engine, seed_job


@pytest.fixture
def repo(sqlite_url):
    repository = open_store(sqlite_url)
    yield repository
    repository.engine.dispose()


def ingest(cli, tmp_path, rows, *flags):
    path = tmp_path / "j.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return cli("ingest", str(path), *flags)


def fail(repo, codes):
    """Claim the queued rows in order and fail them with `codes`."""
    claims = repo.claim_queued("w", len(codes), lease_seconds=30)
    repo.apply([Fail(c.item_id, c.lease_token, "submitting", c.attempt, "failed", code,
                     f"{code} happened") for c, code in zip(claims, codes, strict=True)])


def row(repo, key):
    return repo.item_by_key(repo.get_job("j").id, key)


def test_retry_failed_renews_the_budget_keeps_history_and_finishes(cli, repo, tmp_path):
    ingest(cli, tmp_path, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}],
           "--model", "gpt-5.4")
    fail(repo, ["task_failed", "task_failed"])
    result = cli("retry", "j", "--failed")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("job j: re-queued 2 row(s)")
    a = row(repo, "a")
    assert (a["status"], a["attempts"], a["free_attempts"], a["error_code"]) == (
        "queued", 1, 1, None)
    done = cli("poll", "--until-done", "--sim", "--max-attempts", "1")
    assert done.exit_code == 0, done.output
    a = row(repo, "a")
    assert (a["status"], a["attempts"]) == ("succeeded", 2)
    assert [x["outcome"] for x in repo.attempts_of(a["id"])] == ["failed", "succeeded"]


def test_retry_by_code_releases_held_rows_only(cli, repo, tmp_path):
    ingest(cli, tmp_path, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}],
           "--model", "gpt-5.4")
    fail(repo, ["in_doubt_held", "task_failed"])
    result = cli("retry", "j", "--code", "in_doubt_held")
    assert result.output.startswith("job j: re-queued 1 row(s)")
    assert (row(repo, "a")["status"], row(repo, "b")["status"]) == ("queued", "failed")
    assert cli("retry", "j", "--code", "nothing_like_it").output == "job j: re-queued 0 row(s)\n"


def test_retry_with_changed_fields_rebuilds_the_request(cli, repo, tmp_path):
    ingest(cli, tmp_path, [{"id": "a", "prompt": "p", "max_tokens": 20}],
           "--model", "gpt-5.4", "--temperature", "0.5")
    fail(repo, ["length"])
    result = cli("retry", "j", "--set", "max_tokens=256", "--set", "temperature=null",
                 "--set", "model=gpt-5.5")
    assert result.exit_code == 0, result.output
    a = row(repo, "a")
    body = json.loads(a["request"])
    assert (body["max_tokens"], body["model"], "temperature" in body) == (256, "gpt-5.5", False)
    assert a["request_hash"] == request_hash(a["request"]) and a["model"] == "gpt-5.5"


def test_retry_refuses_a_change_that_makes_rows_invalid(cli, repo, tmp_path):
    ingest(cli, tmp_path, [{"id": "a", "prompt": "p"}], "--model", "gpt-5.4")
    fail(repo, ["task_failed"])
    result = cli("retry", "j", "--set", "max_tokens=8")
    assert result.exit_code == 2
    assert result.output.splitlines()[1:] == [
        "not re-queued: 1 row(s) (first 1):",
        "  row a: model gpt-5.4 needs max_tokens >= 16, got 8"]
    assert row(repo, "a")["status"] == "failed"


def test_retry_invalid_rows_only_when_the_change_makes_them_valid(cli, repo, tmp_path):
    ingest(cli, tmp_path, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": ""},
                           {"id": "a", "prompt": "again"}], "--model", "claude-sonnet-4-6")
    plain = cli("retry", "j", "--invalid")
    assert plain.exit_code == 2
    assert "row a: model claude-sonnet-4-6 requires max_tokens" in plain.output
    fixed = cli("retry", "j", "--invalid", "--set", "max_tokens=100")
    assert fixed.exit_code == 2
    assert fixed.output.splitlines() == [
        "job j: re-queued 1 row(s); run `foxbatch poll --until-done` to process them",
        "not re-queued: 2 row(s) (first 2):", "  row b: prompt is empty",
        "  row ~line:3: the row has no key of its own (its key repeats an earlier row's, or "
        "it lacks the id field); fix the input file and ingest it again"]
    a = row(repo, "a")
    assert (a["status"], json.loads(a["request"])["max_tokens"]) == ("queued", 100)


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "max_tokens=abc"], "max_tokens must be a whole number"),
    (["--set", "max_tokens=0"], "max_tokens must be at least 1"),
    (["--set", "temperature=3"], "temperature must be in [0, 2]"),
    (["--set", "reasoning=maybe"], "use true or false"),
    (["--set", "top_k=3"], "use FIELD=VALUE with FIELD one of model"),
    (["--set", "max_tokens"], "use FIELD=VALUE"),
    (["--set", "model=null"], "every request needs a model"),
    (["--set", "model="], "the value is empty"),
])
def test_retry_bad_settings_are_one_line_errors(cli, tmp_path, args, message):
    ingest(cli, tmp_path, [{"prompt": "p"}], "--model", "gpt-5.4")
    result = cli("retry", "j", *args)
    assert result.exit_code == 1 and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_retry_and_cancel_unknown_job_exit_1(cli):
    for command in ("retry", "cancel"):
        result = cli(command, "nope")
        assert (result.exit_code, result.stderr) == (
            1, "foxbatch: error: no job named 'nope' in this database\n")
    assert cli("cancel").exit_code == 1


def test_cancel_leaves_tasks_in_flight_and_retry_brings_rows_back(cli, repo, tmp_path):
    ingest(cli, tmp_path, [{"id": k, "prompt": k} for k in "abc"], "--model", "gpt-5.4")
    repo.claim_queued("w", 1, lease_seconds=30)
    result = cli("cancel", "j")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "job j: cancelled 2 queued row(s)",
        "1 row(s) in flight are left to finish: results are recorded, failures are not "
        "retried (--discard ignores them)"]
    assert (row(repo, "a")["status"], row(repo, "b")["status"]) == ("submitting", "cancelled")
    assert row(repo, "a")["error_code"] == "cancel_requested"
    discard = cli("cancel", "j", "--discard")
    assert discard.output.splitlines() == [
        "job j: cancelled 0 queued row(s)",
        "discarded 1 row(s) in flight (their results will be ignored)"]
    assert repo.attempts_of(row(repo, "a")["id"])[0]["outcome"] == "cancelled"
    back = cli("retry", "j", "--cancelled")
    assert back.output.startswith("job j: re-queued 3 row(s)")
    assert cli("cancel", "j", "--bogus").exit_code == 1


async def test_discarded_rows_stay_cancelled_while_the_engine_runs(repo):
    job_id = seed_job(repo, 20)
    sim = Simulator(SimConfig(seed=3, latency_median=0.5, latency_sigma=0.2))
    engine = asyncio.create_task(run_engine(repo, sim, job_id, lease_seconds=5))
    while repo.counts(job_id)["pending"] < 5:
        await asyncio.sleep(0.05)
    cancelled = repo.cancel_items(job_id, ["queued", "submitting", "pending"])
    summary = await asyncio.wait_for(engine, 60)
    counts = repo.counts(job_id)
    assert counts["cancelled"] == cancelled and counts["succeeded"] == 20 - cancelled
    assert summary.reason == "done"
    assert all(item["output"] is None for item in repo.iter_items(job_id, statuses=["cancelled"]))
