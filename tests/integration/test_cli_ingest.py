"""`foxbatch ingest` and `foxbatch status` through click's CliRunner, on real SQLite files."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from foxbatch.cli import main
from foxbatch.cli.ingest import ingest_options, ingest_options_from
from foxbatch.ingest import IngestOptions
from foxbatch.models import ALL_STATUSES


@pytest.fixture
def run(sqlite_url):
    """Run foxbatch with the test's database; returns click's Result."""
    def invoke(*args: str, stdin: bytes | None = None):
        return CliRunner().invoke(main, ["--db", sqlite_url, *args], input=stdin)
    return invoke


def write(path: Path, rows: list[object]) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def status(run, job: str) -> dict:
    result = run("status", job, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_ingest_prints_a_summary_and_status_counts_every_state(run, tmp_path):
    path = write(tmp_path / "reviews.jsonl", [{"id": "a", "prompt": "p"},
                                              {"id": "b", "prompt": "q"}])
    result = run("ingest", path, "--model", "gpt-5.4")
    assert result.exit_code == 0, result.output
    assert result.output == "job reviews: 2 rows read: 2 new, 0 already present, 0 invalid\n"
    doc = status(run, "reviews")
    assert (doc["job"], doc["total"]) == ("reviews", 2)
    assert doc["counts"] == {s: (2 if s == "queued" else 0) for s in ALL_STATUSES}
    assert list(doc["counts"]) == list(ALL_STATUSES)
    again = run("ingest", path, "--model", "gpt-5.4")
    assert "0 new, 2 already present" in again.output


def test_invalid_rows_exit_2_and_show_their_lines(run, tmp_path):
    path = write(tmp_path / "mixed.jsonl", [{"prompt": "ok"}, {"prompt": ""}, "{oops"])
    result = run("ingest", path, "--model", "gpt-5.4")
    assert result.exit_code == 2
    assert result.output.splitlines()[1:] == [
        "invalid rows (first 2 of 2):", "  line 2: prompt is empty",
        "  line 3: not valid JSON (unexpected character, expected a string key at column 2)"]
    assert status(run, "mixed")["counts"]["invalid"] == 2


def test_changed_rows_are_reported_and_replaced_on_request(run, tmp_path):
    path = tmp_path / "jobs.jsonl"
    write(path, [{"id": "a", "prompt": "p"}])
    run("ingest", str(path), "--model", "gpt-5.4")
    write(path, [{"id": "a", "prompt": "new p"}, {"id": "b", "prompt": "q"}])
    kept = run("ingest", str(path), "--model", "gpt-5.4")
    assert "changed since stored: 1 (a); kept as they were (--replace re-queues them)" in \
        kept.output
    replaced = run("ingest", str(path), "--model", "gpt-5.4", "--replace")
    assert "changed since stored: 1 (a); 1 re-queued" in replaced.output


M = ["--model", "gpt-5.4"]


def prompts(directory: Path, name: str = "t.jsonl") -> str:
    return write(directory / name, [{"prompt": "p"}])


@pytest.mark.parametrize(("make", "args", "message"), [
    (lambda d: str(d / "nope.jsonl"), M, "nope.jsonl: no such file"),
    (lambda d: str(d), M, "is a directory"),
    (lambda d: prompts(d, "t.txt"), M, "pass --format"),
    (lambda d: write(d / "t.jsonl", [{"text": "p"}]), M, "t.jsonl: no 'prompt' field"),
    (prompts, [], "t.jsonl: line 1 names no model; pass --model"),
    (prompts, ["--model", " "], "--model must not be empty"),
    (prompts, [*M, "--template", "{}"], "--template"),
    (prompts, [*M, "--prompt-field", "p", "--template", "{p}"], "exclude each other"),
    (prompts, [*M, "--max-tokens", "0"], "at least 1"),
    (prompts, [*M, "--temperature", "3"], "[0, 2]"),
    (prompts, [*M, "--encoding", "klingon"], "unknown encoding"),
])
def test_file_and_usage_problems_are_one_line_and_exit_1(run, tmp_path, make, args, message):
    result = run("ingest", make(tmp_path), *args)
    assert result.exit_code == 1
    assert result.output.startswith("foxbatch: error: ") and message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_non_utf8_csv_names_the_line_and_the_option(run, tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("prompt\nhello\ncrème brûlée\n".encode("latin-1"))
    result = run("ingest", str(path), "--model", "gpt-5.4")
    assert result.exit_code == 1
    assert "latin.csv: line 3 is not valid utf-8" in result.output
    assert "--encoding" in result.output
    fixed = run("ingest", str(path), "--model", "gpt-5.4", "--encoding", "latin-1")
    assert fixed.exit_code == 0 and "2 new" in fixed.output


def test_strict_stores_nothing_and_names_file_line_and_reason(run, tmp_path):
    path = write(tmp_path / "s.jsonl", [{"prompt": "ok"}, {"prompt": "p", "temperature": 7}])
    result = run("ingest", path, "--model", "gpt-5.4", "--strict")
    assert result.exit_code == 1
    assert result.output == (f"foxbatch: error: {path} line 2: temperature must be in [0, 2], "
                             "got 7.0\n")
    assert status(run, "s")["total"] == 0


def test_standard_input(run):
    result = run("ingest", "-", "--job", "piped", "--model", "gpt-5.4",
                 stdin=b'{"id": "x", "prompt": "hi"}\n{"id": "y", "prompt": "yo"}\n')
    assert result.exit_code == 0, result.output
    assert status(run, "piped")["counts"]["queued"] == 2
    assert run("ingest", "-", "--model", "gpt-5.4", stdin=b"").exit_code == 1


def test_mapping_options(run, tmp_path, sqlite_url):
    path = tmp_path / "reviews.csv"
    path.write_text("uid,text,stars\nu1,Loved it,5\n", encoding="utf-8")
    result = run("ingest", str(path), "--job", "labels", "--model", "claude-opus-4-7",
                 "--max-tokens", "20", "--temperature", "0.3", "--reasoning", "--system",
                 "Answer with one word.", "--template", "Review: {text}\\nStars: {stars}",
                 "--id-field", "uid")
    assert result.exit_code == 0, result.output
    from foxbatch.store import open_store
    repo = open_store(sqlite_url)
    try:
        request = json.loads(repo.item_by_key(repo.get_job("labels").id, "u1")["request"])
    finally:
        repo.engine.dispose()
    assert request == {"model": "claude-opus-4-7", "prompt": "Review: Loved it\nStars: 5",
                       "system_prompt": "Answer with one word.", "max_tokens": 20,
                       "temperature": 0.3, "reasoning": True, "sync": False, "stream": False}


def test_status_text_and_unknown_job(run, tmp_path):
    run("ingest", write(tmp_path / "j.jsonl", [{"prompt": "p"}]), "--model", "gpt-5.4")
    text = run("status", "j")
    assert text.exit_code == 0 and text.output.splitlines()[1:3] == [
        "  invalid                0", "  queued                 1"]
    assert text.output.startswith("job j: 1 rows, 1 row(s) left")
    unknown = run("status", "nope", "--json")
    assert unknown.exit_code == 1
    assert unknown.output == "foxbatch: error: no job named 'nope' in this database\n"


def test_ingest_options_decorator_and_conversion():
    seen = {}

    @click.command()
    @ingest_options
    @click.option("--other")
    def command(**kwargs):
        seen.update(kwargs)

    CliRunner().invoke(command, ["--model", "m", "--template", r"a\tb {x}\\n", "--other", "o"],
                       catch_exceptions=False)
    options = ingest_options_from(seen)
    assert options == IngestOptions(model="m", template="a\tb {x}\\n")
    assert options.reasoning is None and seen["other"] == "o"
