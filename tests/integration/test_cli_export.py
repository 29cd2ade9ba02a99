"""`foxbatch export` through CliRunner: columns, order, formats, filters, --raw, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from foxbatch import export
from foxbatch.cli import main
from foxbatch.export import ExportOptions, export_job
from foxbatch.store import open_store

ROWS = [
    {"id": "b", "prompt": "=1+1 is two", "model": "gpt-5.4", "status": "vip", "meta": None,
     "score": 1},
    {"id": "a", "prompt": "line one\nline two, \"quoted\"", "meta": 7, "score": 2.5},
    {"id": "c", "prompt": "", "meta": {"nested": [1, 2]}, "score": None},
    {"id": "d", "prompt": "héllo 日本", "meta": "text", "extra": True},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    """A store with one finished job `rows` (3 succeeded, 1 invalid), run once for the module."""
    folder = tmp_path_factory.mktemp("export")
    source = folder / "rows.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS),
                      encoding="utf-8")
    url = f"sqlite:///{folder / 'store.db'}"
    result = CliRunner().invoke(main, ["--db", url, "run", str(source), "--sim", "--model",
                                       "gpt-5.5"])
    assert result.exit_code == 2, result.output  # the empty prompt is invalid
    return url, folder


def export_to(store, *args: str):
    return CliRunner().invoke(main, ["--db", store[0], "export", "rows", *args])


def test_jsonl_has_input_fields_verbatim_then_result_columns_in_input_order(store, tmp_path):
    out = tmp_path / "out.jsonl"
    result = export_to(store, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "exported 4 row(s) of job rows" in result.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["b", "a", "c", "d"]
    assert list(rows[0]) == ["id", "prompt", "model", "status", "meta", "score", "extra",
                             "output", "result_status", "finish_reason", "prompt_tokens",
                             "completion_tokens", "total_tokens", "result_model", "task_id",
                             "attempts", "error_code", "error_message"]
    first, invalid = rows[0], rows[2]
    assert (first["model"], first["status"], first["result_model"]) == ("gpt-5.4", "vip",
                                                                         "gpt-5.4")
    assert first["result_status"] == "succeeded" and first["output"].startswith("[")
    assert first["total_tokens"] == first["prompt_tokens"] + first["completion_tokens"]
    assert (invalid["result_status"], invalid["error_code"]) == ("invalid", "invalid_row")
    assert invalid["meta"] == {"nested": [1, 2]} and rows[3]["extra"] is True


def test_csv_guards_formulas_and_keeps_awkward_cells(store, tmp_path):
    out = tmp_path / "out.csv"
    assert export_to(store, "-o", str(out)).exit_code == 0
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["prompt"] == "'=1+1 is two"
    assert rows[1]["prompt"] == "line one\nline two, \"quoted\""
    assert rows[2]["meta"] == '{"nested": [1, 2]}' and rows[3]["prompt"] == "héllo 日本"
    assert rows[3]["extra"] == "true" and rows[0]["meta"] == ""


def test_csv_cell_rule():
    assert [export.csv_cell(v) for v in ("=A1", "+1", "-1", "-x", "@me", "\tx", None, 2.5)] == \
        ["'=A1", "+1", "-1", "'-x", "'@me", "'\tx", "", "2.5"]


def test_parquet_schema_is_decided_up_front_across_batches(store, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PARQUET_BATCH", 1)  # a batch whose meta is None comes first
    out = tmp_path / "out.parquet"
    assert export_to(store, "-o", str(out)).exit_code == 0
    table = pq.read_table(out)
    types = {f.name: str(f.type) for f in table.schema}
    assert (types["meta"], types["score"], types["extra"]) == ("string", "double", "bool")
    assert (types["attempts"], types["output"]) == ("int64", "string")
    columns = table.to_pydict()
    assert columns["meta"] == [None, "7", '{"nested": [1, 2]}', "text"]
    assert columns["score"] == [1.0, 2.5, None, None]
    assert columns["id"] == ["b", "a", "c", "d"]


def test_empty_parquet_export_has_the_schema(store, tmp_path):
    out = tmp_path / "none.parquet"
    assert export_to(store, "-o", str(out), "--status", "cancelled").exit_code == 0
    table = pq.read_table(out)
    assert table.num_rows == 0 and "result_status" in table.column_names


def test_status_filter_and_raw(store, tmp_path):
    out = tmp_path / "out.jsonl"
    result = export_to(store, "-o", str(out), "--status", "invalid", "--status", "failed",
                       "--raw")
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["id"] == "c" and row["raw"] is None
    export_to(store, "-o", str(out), "--status", "succeeded", "--raw")
    raw = json.loads(out.read_text(encoding="utf-8").splitlines()[0])["raw"]
    assert raw["object"] == "chat.completion" and raw["choices"][0]["message"]["content"]


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "{dir}/out.txt"], "unknown export format 'txt'"),
    (["-o", "{dir}/missing/out.csv"], "does not exist"),
])
def test_bad_targets_are_one_line_errors(store, tmp_path, args, message):
    result = export_to(store, *[a.format(dir=tmp_path) for a in args])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_bad_job_status_and_missing_output_exit_1(store, tmp_path):
    out = str(tmp_path / "o.csv")
    unknown = CliRunner().invoke(main, ["--db", store[0], "export", "nope", "-o", out])
    assert (unknown.exit_code, unknown.stderr) == (
        1, "foxbatch: error: no job named 'nope' in this database\n")
    assert export_to(store, "-o", out, "--status", "done").exit_code == 1
    assert export_to(store).exit_code == 1
    folder = export_to(store, "-o", str(tmp_path))
    assert folder.exit_code == 1 and "is a directory" in folder.stderr


def test_verbose_shows_the_traceback(store, tmp_path):
    result = CliRunner().invoke(main, ["--db", store[0], "-v", "export", "nope", "-o",
                                       str(tmp_path / "o.csv")])
    assert result.exit_code == 1 and "Traceback" in result.stderr


def test_a_failed_export_leaves_the_old_file(store, tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def broken(item, columns, *, raw=False):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export, "export_row", broken)
    repo = open_store(store[0])
    with pytest.raises(RuntimeError):
        export_job(repo, repo.get_job("rows"), out, ExportOptions())
    repo.engine.dispose()
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
