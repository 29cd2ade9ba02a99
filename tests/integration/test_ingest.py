"""ingest(): prompt files into a real store (SQLite files, and PostgreSQL where it matters)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foxbatch import ingest as ingest_module
from foxbatch.errors import ConfigError, InputFileError, RowError
from foxbatch.ingest import INVALID_ROW_CODE, IngestOptions, ingest
from foxbatch.inputs import InputFile
from foxbatch.models import request_hash
from foxbatch.reading import ItemStream
from foxbatch.store import open_store

GPT = IngestOptions(model="gpt-5.4", max_tokens=64)


@pytest.fixture
def sqlite_repo(sqlite_url):
    """A migrated store in a real SQLite file."""
    repository = open_store(sqlite_url)
    yield repository
    repository.engine.dispose()


@pytest.fixture(params=["in-process", "reader-process"])
def reader(request, monkeypatch) -> str:
    """Read the file in this process, or (as large files are) in a reader process."""
    if request.param == "reader-process":
        monkeypatch.setattr(ingest_module, "READER_MIN_BYTES", 0)
    return request.param


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def reviews(n: int = 5) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"Review {i}: fine", "stars": i % 5} for i in range(1, n + 1)]


def all_items(repo, job_id: int) -> list:
    return list(repo.iter_items(job_id))


def test_jsonl_rows_become_queued_items(repo, tmp_path):
    path = write_jsonl(tmp_path / "reviews.jsonl", reviews(5))
    report = ingest(repo, str(path), GPT)
    assert report.job.name == "reviews"
    assert (report.rows_read, report.inserted, report.present, report.invalid) == (5, 5, 0, 0)
    assert repo.counts(report.job.id)["queued"] == 5
    item = repo.item_by_key(report.job.id, "r2")
    assert item["row_index"] == 2 and item["model"] == "gpt-5.4"
    assert json.loads(item["input"]) == {"id": "r2", "prompt": "Review 2: fine", "stars": 2}
    assert json.loads(item["request"])["prompt"] == "Review 2: fine"
    assert item["request_hash"] == request_hash(item["request"])


def test_the_job_keeps_its_source_and_defaults(repo, tmp_path):
    path = write_jsonl(tmp_path / "eval.jsonl", reviews(1))
    options = IngestOptions(job="nightly", model="gpt-5.4", max_tokens=64, temperature=0.5,
                            template="{prompt}!")
    job = ingest(repo, str(path), options).job
    assert (job.name, job.source) == ("nightly", str(path.resolve()))
    assert job.defaults == {"model": "gpt-5.4", "max_tokens": 64, "temperature": 0.5,
                            "template": "{prompt}!"}


def test_reingesting_the_same_file_adds_nothing(repo, tmp_path):
    path = write_jsonl(tmp_path / "reviews.jsonl", [*reviews(4), {"id": "bad", "prompt": ""}])
    first = ingest(repo, str(path), GPT)
    again = ingest(repo, str(path), GPT)
    assert (first.inserted, first.invalid) == (5, 1)
    assert (again.rows_read, again.inserted, again.present, again.invalid) == (5, 0, 5, 1)
    assert (again.changed, again.changed_count) == ((), 0)
    assert sum(repo.counts(again.job.id).values()) == 5


def test_a_changed_file_adds_new_keys_and_reports_changed_ones(repo, tmp_path):
    path = write_jsonl(tmp_path / "reviews.jsonl", reviews(3))
    ingest(repo, str(path), GPT)
    rows = reviews(4)
    rows[1]["prompt"] = "Review 2: edited"
    write_jsonl(path, rows)
    report = ingest(repo, str(path), GPT)
    assert (report.inserted, report.present, report.changed, report.replaced) == (
        1, 3, ("r2",), 0)
    assert "fine" in repo.item_by_key(report.job.id, "r2")["request"]
    replaced = ingest(repo, str(path), IngestOptions(model="gpt-5.4", max_tokens=64,
                                                     replace=True))
    assert (replaced.changed, replaced.replaced) == (("r2",), 1)
    item = repo.item_by_key(report.job.id, "r2")
    assert "edited" in item["request"] and item["status"] == "queued"


def test_invalid_rows_are_stored_with_their_line_and_reason(repo, tmp_path, reader):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"id": "a", "prompt": "ok"}, {"id": "b", "prompt": "hot", "temperature": 3},
        "{broken", ["not", "an", "object"], {"id": "c", "prompt": "also ok"}])
    report = ingest(repo, str(path), GPT)
    assert (report.rows_read, report.inserted, report.invalid) == (5, 5, 3)
    assert report.invalid_reasons == (
        "line 2: temperature must be in [0, 2], got 3.0",
        "line 3: not valid JSON (unexpected character, expected a string key at column 2)",
        "line 4: not a JSON object but an array")
    counts = repo.counts(report.job.id)
    assert (counts["queued"], counts["invalid"]) == (2, 3)
    hot = repo.item_by_key(report.job.id, "b")
    assert (hot["status"], hot["error_code"]) == ("invalid", INVALID_ROW_CODE)
    assert hot["error_message"] == "line 2: temperature must be in [0, 2], got 3.0"
    assert hot["request"] is None and json.loads(hot["input"])["temperature"] == 3
    broken = repo.item_by_key(report.job.id, "3")
    assert json.loads(broken["input"]) == {"_raw": "{broken"}


def test_repeated_keys_keep_the_first_occurrence(repo, tmp_path):
    path = write_jsonl(tmp_path / "dups.jsonl", [
        {"id": "a", "prompt": "first"}, {"id": "b", "prompt": "b"},
        {"id": "a", "prompt": "second"}, {"id": "2", "prompt": "clashes with line 2's key?"},
        {"prompt": "keyed by its line number 5"}])
    report = ingest(repo, str(path), GPT)
    assert (report.rows_read, report.inserted, report.invalid) == (5, 5, 1)
    assert "first" in repo.item_by_key(report.job.id, "a")["request"]
    repeat = repo.item_by_key(report.job.id, "~line:3")
    assert repeat["status"] == "invalid"
    assert repeat["error_message"] == ("line 3: the key 'a' repeats line 1 (the first "
                                       "occurrence is kept)")
    assert json.loads(repeat["input"])["prompt"] == "second"
    assert repo.item_by_key(report.job.id, "2")["status"] == "queued"
    again = ingest(repo, str(path), GPT)
    assert (again.inserted, again.present, again.invalid, again.changed) == (0, 5, 1, ())


def test_repeats_across_chunks_and_invalid_repeats_count_once(sqlite_repo, tmp_path, reader):
    rows = [{"id": f"k{i}", "prompt": "p"} for i in range(1, 7001)]
    rows += [{"id": "k1", "prompt": "p"}, {"id": "k2", "prompt": "p", "temperature": 9}]
    report = ingest(sqlite_repo, str(write_jsonl(tmp_path / "big.jsonl", rows)), GPT)
    assert (report.rows_read, report.inserted, report.invalid) == (7002, 7002, 2)
    assert report.invalid_reasons == (
        "line 7001: the key 'k1' repeats line 1 (the first occurrence is kept)",
        "line 7002: temperature must be in [0, 2], got 9.0",
        "line 7002: the key 'k2' repeats line 2 (the first occurrence is kept)")


def test_strict_refuses_the_whole_file_at_the_first_bad_row(repo, tmp_path, reader):
    rows = [*reviews(30), {"id": "x", "prompt": "p", "max_tokens": 0}, *reviews(3)]
    path = write_jsonl(tmp_path / "strict.jsonl", rows)
    options = IngestOptions(model="gpt-5.4", strict=True)
    with pytest.raises(RowError, match=r"strict.jsonl line 31: max_tokens must be >= 1") as bad:
        ingest(repo, str(path), options)
    assert (bad.value.field, bad.value.line) == ("max_tokens", 31)
    assert sum(repo.counts(repo.get_job("strict").id).values()) == 0


def test_strict_refuses_a_repeated_key(repo, tmp_path):
    path = write_jsonl(tmp_path / "strict.jsonl", [*reviews(3), {"id": "r1", "prompt": "p"}])
    with pytest.raises(RowError, match="line 4: the key 'r1' repeats line 1"):
        ingest(repo, str(path), IngestOptions(model="gpt-5.4", strict=True))
    assert sum(repo.counts(repo.get_job("strict").id).values()) == 0


def test_strict_stores_nothing_when_decoding_fails_late(sqlite_repo, tmp_path, reader):
    path = tmp_path / "late.csv"
    path.write_bytes(b"prompt\n" + b"a fine prompt\n" * 5000 + b"caf\xe9\n")
    with pytest.raises(InputFileError, match=r"line 5002 is not valid utf-8"):
        ingest(sqlite_repo, str(path), IngestOptions(model="gpt-5.4", strict=True))
    assert sum(sqlite_repo.counts(sqlite_repo.get_job("late").id).values()) == 0


def test_strict_ingests_a_good_file(sqlite_repo, tmp_path):
    path = write_jsonl(tmp_path / "good.jsonl", reviews(3))
    report = ingest(sqlite_repo, str(path), IngestOptions(model="gpt-5.4", strict=True))
    assert report.inserted == 3


@pytest.mark.parametrize(("make", "error_type", "text"), [
    (lambda d: d / "missing.jsonl", InputFileError, "missing.jsonl: no such file"),
    (lambda d: (d / "dir.jsonl").mkdir() or d / "dir.jsonl", InputFileError, "is a directory"),
    (lambda d: write_jsonl(d / "noprompt.jsonl", [{"text": "a"}]), InputFileError,
     "noprompt.jsonl: no 'prompt' field"),
    (lambda d: write_jsonl(d / "nomodel.jsonl", [{"prompt": "a"}]), ConfigError,
     "nomodel.jsonl: line 1 names no model"),
])
def test_file_level_problems_store_nothing(sqlite_repo, tmp_path, make, error_type, text):
    path = make(tmp_path)
    options = IngestOptions() if "nomodel" in str(path) else GPT
    with pytest.raises(error_type, match=text):
        ingest(sqlite_repo, str(path), options)
    assert sqlite_repo.list_jobs() == []


def test_csv_file(sqlite_repo, tmp_path, reader):
    path = tmp_path / "labels.csv"
    path.write_bytes("\ufeffid,text,max_tokens\n007,\"Great, \"\"really\"\"\nyes\",\nx,NA,9\n"
                     .encode())
    options = IngestOptions(model="gpt-5.4", template="Review: {text}\nLabel:", max_tokens=32)
    report = ingest(sqlite_repo, str(path), options)
    assert (report.inserted, report.invalid) == (2, 1)
    good = sqlite_repo.item_by_key(report.job.id, "007")
    assert json.loads(good["input"]) == {"id": "007", "text": 'Great, "really"\nyes',
                                         "max_tokens": ""}
    assert json.loads(good["request"])["prompt"] == 'Review: Great, "really"\nyes\nLabel:'
    assert report.invalid_reasons == (
        "row 2 (line 4): model gpt-5.4 needs max_tokens >= 16, got 9",)


def test_parquet_file(sqlite_repo, tmp_path):
    path = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"custom_id": ["q1", "q2"], "prompt": ["a", "b"],
                             "model": ["gpt-5.5", None]}), path)
    report = ingest(sqlite_repo, str(path), GPT)
    assert report.inserted == 2
    models = [sqlite_repo.item_by_key(report.job.id, k)["model"] for k in ("q1", "q2")]
    assert models == ["gpt-5.5", "gpt-5.4"]


def test_format_option_overrides_the_extension(sqlite_repo, tmp_path):
    path = write_jsonl(tmp_path / "prompts.txt", reviews(2))
    report = ingest(sqlite_repo, str(path), IngestOptions(model="gpt-5.4", format="jsonl"))
    assert (report.job.name, report.inserted) == ("prompts", 2)


def test_standard_input_needs_a_job_name(sqlite_repo, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"prompt": "hi"}\n')))
    with pytest.raises(ConfigError, match="--job is required"):
        ingest(sqlite_repo, "-", GPT)
    report = ingest(sqlite_repo, "-", IngestOptions(job="piped", model="gpt-5.4"))
    assert (report.job.name, report.job.source, report.inserted) == ("piped", "-", 1)


@pytest.mark.parametrize(("options", "text"), [
    ({"prompt_field": "a", "template": "{a}"}, "exclude each other"),
    ({"max_tokens": 0}, "--max-tokens must be at least 1"),
    ({"temperature": 2.5}, r"--temperature must be in \[0, 2\]"),
    ({"job": " "}, "--job must not be empty"),
])
def test_options_are_checked(options, text):
    with pytest.raises(ConfigError, match=text):
        IngestOptions(**options)


def test_a_reader_process_that_dies_is_an_error(sqlite_repo, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "READER_MIN_BYTES", 0)
    monkeypatch.setattr(ingest_module, "_READER_COMMAND", "import sys; sys.exit(3)")
    path = write_jsonl(tmp_path / "r.jsonl", reviews(3))
    with pytest.raises(InputFileError, match=r"r.jsonl: the process reading it stopped \(exit "
                                             r"code 3\)"):
        ingest(sqlite_repo, str(path), GPT)


def test_the_reader_process_starts_without_sqlalchemy():
    """The reader process imports foxbatch.reading only: no SQLAlchemy, a fast start."""
    code = "import sys, foxbatch.reading; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_reader_whose_items_are_no_longer_wanted_is_stopped(tmp_path):
    """The writer gives up after one item (as when a write fails): closing stops the reader
    at once, though it still had most of the file to send."""
    path = write_jsonl(tmp_path / "big.jsonl", reviews(20_000))
    with InputFile(str(path), GPT.mapper()) as source:
        stream = ItemStream(source, strict=False)
        reader = ingest_module._ReaderProcess(source, GPT)
        first = next(reader.items(stream))
        started = time.monotonic()
        reader.close()
    assert first[0] == "r1" and time.monotonic() - started < 5
    assert reader._process.returncode is not None


def test_a_reader_process_that_sends_garbage_is_an_error(sqlite_repo, tmp_path, monkeypatch):
    """A stream cut off or garbled mid-message (the reader killed by the OOM killer, say) is
    reported like a reader that stopped, with its exit code, not as an unpickling error."""
    monkeypatch.setattr(ingest_module, "READER_MIN_BYTES", 0)
    monkeypatch.setattr(ingest_module, "_READER_COMMAND",
                        "import sys; sys.stdout.buffer.write(b'\\xff' * 64); "
                        "sys.stdout.flush(); import time; time.sleep(30)")
    path = write_jsonl(tmp_path / "r.jsonl", reviews(3))
    with pytest.raises(InputFileError, match=r"r.jsonl: the process reading it stopped \(exit "
                                             r"code -9\)"):
        ingest(sqlite_repo, str(path), GPT)
