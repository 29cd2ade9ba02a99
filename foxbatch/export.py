"""Store -> JSONL / CSV / Parquet: results joined to the input rows, in input order, streamed.

Each output row is the input row's fields verbatim, then the result columns of RESULT_COLUMNS.
A result column whose name is already an input field is written as `result_<name>` (again
prefixed until unique), so input fields are never overwritten: an input `model` column keeps the
requested model and the model that answered goes to `result_model`.

Files are written to a temporary file beside the target and renamed over it when complete, so
a reader (or a crash) sees either the old file or the whole new one. Rows are read from the store
page by page and written as they come: a job of any size is never held in memory.

CSV: a cell that a spreadsheet would run as a formula (text starting with = + - @, a tab or a
carriage return, and not a plain number) is written with a leading single quote, `'=1+1`.

Parquet: the schema is fixed before the first row is written, from a first pass over the input
fields alone: a field whose values (nulls aside) are all booleans, all integers, all numbers or all
strings gets that type (integers and floats together: double); any other field, one with mixed
types or nested values, is a string column holding each value's JSON text (strings as they are).
The result columns have fixed types; `raw` is the ChatCompletion's JSON text.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any

from sqlalchemy import RowMapping

from foxbatch.crashpoints import crash_point
from foxbatch.errors import ConfigError
from foxbatch.models import ALL_STATUSES
from foxbatch.store import Repository
from foxbatch.store.records import Job

RESULT_COLUMNS = ("output", "status", "finish_reason", "prompt_tokens", "completion_tokens",
                  "total_tokens", "model", "task_id", "attempts", "error_code", "error_message")
RAW_COLUMN = "raw"
INTEGER_COLUMNS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens", "attempts"})
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PARQUET_BATCH = 10_000
NULL_KIND = "null"
JSON_KIND = "json"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
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
    input_kinds: dict[str, str] = field(default_factory=dict)

    @property
    def header(self) -> list[str]:
        """Every column, in output order."""
        return [*self.input_fields, *self.result_names.values()]


def export_job(repo: Repository, job: Job, path: str | Path,
               options: ExportOptions = ExportOptions()) -> int:
    """Write the job's rows to `path` (format from its extension); return the row count.

    ConfigError for an unknown format or status, or a folder that cannot be written to.
    """
    target = Path(path)
    writer = _WRITERS[check_target(target, options)]
    with _atomic_target(target) as tmp:
        columns = plan_columns(repo, job.id, options)
        return writer(tmp, columns, _crash_point_midway(export_rows(repo, job, columns, options)))


def check_target(path: str | Path, options: ExportOptions = ExportOptions()) -> str:
    """The format `export_job` would write `path` in; ConfigError (before any work is done)
    for an unknown format or status, or a folder that does not exist."""
    target = Path(path)
    fmt = (options.format or target.suffix.lstrip(".")).lower()
    if fmt not in _WRITERS:
        raise ConfigError(f"{target}: unknown export format {fmt!r} (use .jsonl, .csv or "
                          ".parquet)")
    _check_statuses(options.statuses)
    if not _folder_of(target).is_dir():
        raise ConfigError(f"{target}: folder {_folder_of(target)} does not exist")
    return fmt


def export_rows(repo: Repository, job: Job, columns: Columns,
                options: ExportOptions = ExportOptions()) -> Iterator[dict[str, Any]]:
    """The job's output rows (see `export_row`), in input order, read page by page."""
    for item in repo.iter_items(job.id, statuses=options.statuses or None):
        yield export_row(item, columns, raw=options.raw)


def plan_columns(repo: Repository, job_id: int, options: ExportOptions) -> Columns:
    """Input field names in order of first appearance with the kind of their values (see
    `value_kind`), and the clash-free result names. Every row of the job counts, whatever
    `options.statuses` selects, so every export of a job has the same columns."""
    kinds: dict[str, str] = {}
    for text in repo.iter_inputs(job_id):
        for key, value in json.loads(text).items():
            kinds[key] = merge_kinds(kinds.get(key, NULL_KIND), value_kind(value))
    wanted = [*RESULT_COLUMNS, RAW_COLUMN] if options.raw else list(RESULT_COLUMNS)
    taken = set(kinds)
    names: dict[str, str] = {}
    for column in wanted:
        name = column
        while name in taken:
            name = f"result_{name}"
        taken.add(name)
        names[column] = name
    return Columns(tuple(kinds), names, kinds)


def value_kind(value: Any) -> str:
    """The kind of one input value for the Parquet schema: null, bool, int, float, str or json
    (nested, or an integer beyond 64 bits)."""
    if value is None:
        return NULL_KIND
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if INT64_MIN <= value <= INT64_MAX else JSON_KIND
    if isinstance(value, float):
        return "float"
    return "str" if isinstance(value, str) else JSON_KIND


def merge_kinds(seen: str, new: str) -> str:
    """The kind of a column holding values of kinds `seen` and `new`: nulls fit any kind,
    integers widen to float, anything else mixed becomes json."""
    if seen in (NULL_KIND, new):
        return new
    if new == NULL_KIND:
        return seen
    if {seen, new} == {"int", "float"}:
        return "float"
    return JSON_KIND


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


def _check_statuses(statuses: Sequence[str]) -> None:
    unknown = [s for s in statuses if s not in ALL_STATUSES]
    if unknown:
        raise ConfigError(f"unknown status {unknown[0]!r} (use {', '.join(ALL_STATUSES)})")


def _folder_of(target: Path) -> Path:
    return target.parent if str(target.parent) else Path(".")


@contextmanager
def _atomic_target(target: Path) -> Iterator[Path]:
    directory = _folder_of(target)
    if target.is_dir():
        raise ConfigError(f"{target}: is a folder, not a file")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write in {directory} "
                          f"({exc.strerror or exc})") from None
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
    import pyarrow.parquet as pq  # imported here: pyarrow takes a while to load

    schema = parquet_schema(columns)
    count = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        while batch := list(islice(rows, PARQUET_BATCH)):
            writer.write_table(_parquet_table(batch, schema, columns))
            count += len(batch)
    return count


def parquet_schema(columns: Columns) -> Any:
    """The Parquet schema of an export: input fields by their kind, result columns fixed."""
    import pyarrow as pa

    arrow = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}
    fields = [pa.field(name, arrow.get(columns.input_kinds.get(name, JSON_KIND), pa.string()))
              for name in columns.input_fields]
    fields += [pa.field(name, pa.int64() if column in INTEGER_COLUMNS else pa.string())
               for column, name in columns.result_names.items()]
    return pa.schema(fields)


def _parquet_table(batch: list[dict[str, Any]], schema: Any, columns: Columns) -> Any:
    import pyarrow as pa

    kinds = {**columns.input_kinds, columns.result_names.get(RAW_COLUMN, ""): JSON_KIND}
    arrays = [pa.array([_parquet_value(row[f.name], kinds.get(f.name)) for row in batch],
                       type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _parquet_value(value: Any, kind: str | None) -> Any:
    """A value as its column stores it: json columns hold JSON text (strings as they are),
    float columns floats."""
    if value is None or kind not in (JSON_KIND, "float"):
        return value
    if kind == "float":
        return float(value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


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

