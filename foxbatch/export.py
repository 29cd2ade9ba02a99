"""Store -> JSONL / CSV / Parquet: results joined to the input rows, in input order, streamed.

Each output row is the input row's fields verbatim, then the result columns of RESULT_COLUMNS.
A result column whose name is already an input field is written as `result_<name>` (again
prefixed until unique), so input fields are never overwritten: an input `model` column keeps the
requested model and the model that answered goes to `result_model`.

Files are written to a temporary file beside the target and renamed over it when complete, so
a reader (or a crash) sees either the old file or the whole new one.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import RowMapping

from foxbatch.crashpoints import crash_point
from foxbatch.errors import ConfigError
from foxbatch.store import Repository
from foxbatch.store.records import Job

RESULT_COLUMNS = ("output", "status", "finish_reason", "prompt_tokens", "completion_tokens",
                  "total_tokens", "model", "task_id", "attempts", "error_code", "error_message")
RAW_COLUMN = "raw"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PARQUET_BATCH = 10_000
CRASH_AFTER_ROWS = 2  # the during_export crash point: the temporary file is half written


@dataclass(frozen=True)
class ExportOptions:
    """What to export: which statuses (all when empty), whether to add the raw completion."""

    statuses: tuple[str, ...] = ()
    raw: bool = False
    format: str | None = None


@dataclass(frozen=True)
class Columns:
    """The output header: input fields, then result columns renamed where they clash."""

    input_fields: tuple[str, ...]
    result_names: dict[str, str]

    @property
    def header(self) -> list[str]:
        """Every column, in output order."""
        return [*self.input_fields, *self.result_names.values()]


def export_job(repo: Repository, job: Job, path: str | Path,
               options: ExportOptions = ExportOptions()) -> int:
    """Write the job's rows to `path` (format from its extension); return the row count."""
    target = Path(path)
    fmt = (options.format or target.suffix.lstrip(".")).lower()
    writer = _WRITERS.get(fmt)
    if writer is None:
        raise ConfigError(f"{target}: unknown export format {fmt!r} (use .jsonl, .csv or "
                          ".parquet)")
    columns = plan_columns(repo, job.id, options)
    rows = _crash_point_midway(export_row(item, columns, raw=options.raw)
                               for item in repo.iter_items(job.id,
                                                           statuses=options.statuses or None))
    with _atomic_target(target) as tmp:
        return writer(tmp, columns, rows)


def plan_columns(repo: Repository, job_id: int, options: ExportOptions) -> Columns:
    """Input field names in order of first appearance, and the clash-free result names."""
    seen: dict[str, None] = {}
    for item in repo.iter_items(job_id, statuses=options.statuses or None):
        for key in json.loads(item["input"]):
            seen.setdefault(key, None)
    wanted = [*RESULT_COLUMNS, RAW_COLUMN] if options.raw else list(RESULT_COLUMNS)
    taken = set(seen)
    names: dict[str, str] = {}
    for column in wanted:
        name = column
        while name in taken:
            name = f"result_{name}"
        taken.add(name)
        names[column] = name
    return Columns(tuple(seen), names)


def export_row(item: RowMapping, columns: Columns, *, raw: bool = False) -> dict[str, Any]:
    """One output row: the input fields, then the result columns."""
    fields = json.loads(item["input"])
    row = {name: fields.get(name) for name in columns.input_fields}
    values = {
        "output": item["output"], "status": item["status"],
        "finish_reason": item["finish_reason"], "prompt_tokens": item["prompt_tokens"],
        "completion_tokens": item["completion_tokens"], "total_tokens": item["total_tokens"],
        "model": item["result_model"] or item["model"], "task_id": item["task_id"],
        "attempts": item["attempts"], "error_code": item["error_code"],
        "error_message": item["error_message"],
    }
    if raw:
        values[RAW_COLUMN] = json.loads(item["result"]) if item["result"] else None
    for column, name in columns.result_names.items():
        row[name] = values[column]
    return row


def _crash_point_midway(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for number, row in enumerate(rows, 1):
        if number == CRASH_AFTER_ROWS:
            crash_point("during_export")
        yield row


@contextmanager
def _atomic_target(target: Path) -> Iterator[Path]:
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise ConfigError(f"{target}: folder {directory} does not exist")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_jsonl(path: Path, columns: Columns, rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    with _open_text(path) as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False))
            out.write("\n")
            count += 1
        _sync(out)
    return count


def _write_csv(path: Path, columns: Columns, rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    with _open_text(path, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns.header)
        for row in rows:
            writer.writerow([csv_cell(v) for v in row.values()])
            count += 1
        _sync(out)
    return count


def csv_cell(value: Any) -> str:
    """One CSV cell: None is empty, nested values are JSON, booleans are true/false, and text
    that a spreadsheet would run as a formula (starting with = + - @, tab or CR, and not a
    plain number) gets a leading single quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    text = str(value)
    if isinstance(value, str) and text.startswith(FORMULA_PREFIXES) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _write_parquet(path: Path, columns: Columns, rows: Iterator[dict[str, Any]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = 0
    writer: pq.ParquetWriter | None = None
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal writer
        table = pa.Table.from_pylist([_parquet_row(r) for r in batch])
        if writer is None:
            writer = pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table.cast(writer.schema))
        batch.clear()

    for row in rows:
        batch.append(row)
        count += 1
        if len(batch) >= PARQUET_BATCH:
            flush()
    if batch or writer is None:
        if not batch:
            pq.write_table(pa.table({c: pa.array([], pa.string()) for c in columns.header}),
                           str(path))
            return 0
        flush()
    assert writer is not None
    writer.close()
    return count


def _parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    # Nested input values become JSON text, so that one column has one type.
    return {k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v
            for k, v in row.items()}


@contextmanager
def _open_text(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    with open(path, "w", encoding="utf-8", newline=newline) as out:
        yield out


def _sync(out: IO[str]) -> None:
    out.flush()
    os.fsync(out.fileno())


_WRITERS: dict[str, Callable[[Path, Columns, Iterator[dict[str, Any]]], int]] = {
    "jsonl": _write_jsonl,
    "csv": _write_csv,
    "parquet": _write_parquet,
}


def export_formats() -> Sequence[str]:
    """The formats `export_job` writes."""
    return tuple(_WRITERS)
