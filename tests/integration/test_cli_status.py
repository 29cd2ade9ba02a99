"""`foxbatch status` and `foxbatch jobs` through CliRunner, on real SQLite files."""

from __future__ import annotations

import json

import pytest

from foxbatch.models import ALL_STATUSES
from foxbatch.store import open_store
from foxbatch.store.records import Fail


@pytest.fixture
def jobs(cli, tmp_path, sqlite_url):
    """Job `done` (2 succeeded, 1 invalid) and job `waiting` (2 queued, 1 failed)."""
    done = tmp_path / "done.jsonl"
    done.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": ""}\n')
    assert cli("run", str(done), "--sim", "--model", "gpt-5.4").exit_code == 2
    waiting = tmp_path / "waiting.jsonl"
    waiting.write_text('{"prompt": "c"}\n{"prompt": "d"}\n{"prompt": "e"}\n')
    assert cli("ingest", str(waiting), "--model", "gpt-5.4").exit_code == 0
    repo = open_store(sqlite_url)
    [claim] = repo.claim_queued("w", 1, lease_seconds=30)
    repo.apply([Fail(claim.item_id, claim.lease_token, "submitting", 1, "failed",
                     "model_rule_violation", "max_tokens too small\nfor this model")])
    repo.engine.dispose()


def test_status_json_has_every_state_tokens_and_errors(cli, jobs):
    result = cli("status", "done", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["job"], doc["total"], doc["done"]) == ("done", 3, True)
    assert doc["counts"] == {s: {"succeeded": 2, "invalid": 1}.get(s, 0) for s in ALL_STATUSES}
    assert doc["attempts"] == 2 and doc["in_doubt_resubmits"] == 0
    assert doc["tokens"]["prompt"] > 0 and doc["tokens"]["completion"] > 0
    assert doc["eta_seconds"] == 0 and doc["rows_per_second"] > 0
    assert doc["errors"] == [{"code": "invalid_row", "count": 1,
                              "example": "line 3: prompt is empty"}]


def test_status_text_of_a_job_with_work_left(cli, jobs):
    result = cli("status", "waiting")
    assert result.exit_code == 0
    text = result.output
    assert text.startswith("job waiting: 3 rows, 2 row(s) left (created ")
    assert "attempts 1; in-doubt resubmissions 0" in text
    assert "most common errors:" in text
    assert "model_rule_violation           1  e.g. max_tokens too small for this model" in text
    assert "throughput: nothing submitted yet" in text


def test_status_of_every_job(cli, jobs):
    docs = json.loads(cli("status", "--json").output)
    assert [d["job"] for d in docs] == ["done", "waiting"]
    text = cli("status").output
    assert "job done: 3 rows, finished" in text and "job waiting:" in text


def test_status_without_jobs_and_of_an_unknown_job(cli):
    assert cli("status").output == "no jobs in this database\n"
    assert cli("status", "--json").output == "[]\n"
    unknown = cli("status", "nope")
    assert (unknown.exit_code, unknown.stderr) == (
        1, "foxbatch: error: no job named 'nope' in this database\n")


def test_watch_refreshes_until_finished_or_count(cli, jobs):
    finished = cli("status", "done", "--watch", "--interval", "0.1", "--json")
    assert finished.exit_code == 0 and len(finished.output.splitlines()) == 1
    waiting = cli("status", "waiting", "--watch", "--interval", "0.1", "--count", "3", "--json")
    assert waiting.exit_code == 0
    assert [json.loads(line)["done"] for line in waiting.output.splitlines()] == [False] * 3
    text = cli("status", "--watch", "--interval", "0.1", "--count", "2")
    assert text.output.count("job waiting:") == 2


def test_watch_bad_interval_and_count_exit_1(cli, jobs):
    assert cli("status", "done", "--watch", "--interval", "0").exit_code == 1
    assert cli("status", "done", "--watch", "--count", "0").exit_code == 1


def test_jobs_table_and_json(cli, jobs):
    table = cli("jobs")
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[0].split() == ["JOB", "ROWS", "SUCCEEDED", "FAILED", "INVALID", "CANCELLED",
                                "ACTIVE", "AGE"]
    assert lines[1].split()[:7] == ["done", "3", "2", "0", "1", "0", "0"]
    assert lines[2].split()[:7] == ["waiting", "3", "0", "1", "0", "0", "2"]
    docs = json.loads(cli("jobs", "--json").output)
    assert [(d["job"], d["total"], d["counts"]["queued"]) for d in docs] == [
        ("done", 3, 0), ("waiting", 3, 2)]
    assert all(d["age_seconds"] >= 0 for d in docs)


def test_jobs_empty_and_bad_flag(cli):
    assert cli("jobs").output == "no jobs in this database\n"
    assert cli("jobs", "--json").output == "[]\n"
    assert cli("jobs", "--bogus").exit_code == 1
