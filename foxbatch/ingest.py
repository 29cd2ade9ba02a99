"""Ingest: a prompt file becomes rows in the store; nothing is sent.

`ingest(repo, path, options)` reads the file (foxbatch.inputs) and stores every row as an item
of the job: good rows `queued`, the others `invalid` with error code "invalid_row" and a message
that names the line and the field, so that status and export show them. Malformed lines, lines
that are not objects and repeated keys (the first occurrence wins; the repeat is stored under
the key "~line:<number>") are invalid rows too. Good rows are ingested regardless, unless
`strict`, which refuses the whole file at its first bad row and stores nothing.

Ingesting is idempotent: a key already in the job is not added again; keys whose content
changed are reported, and re-queued only with `replace`. `submit` and `run` call `ingest` first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from foxbatch.errors import ConfigError, RowError
from foxbatch.inputs import (
    STDIN,
    FieldMap,
    InputFile,
    RequestSettings,
    Row,
    RowMapper,
    synthetic_key,
)
from foxbatch.models import RowStatus
from foxbatch.store import Repository
from foxbatch.store.records import Job, NewItem
from foxbatch.store.repository import COMMIT_ROWS

INVALID_ROW_CODE = "invalid_row"
# How much of a large ingest the report keeps: the first reasons and changed keys.
REPORTED_REASONS = 5
REPORTED_CHANGED = 1_000


@dataclass(frozen=True)
class IngestOptions:
    """How to read a prompt file and what to ask for each row (the ingest flags).

    `job` defaults to the file's stem; `prompt_field` to "prompt" (exclusive with `template`);
    `model`, `system`, `max_tokens`, `temperature` and `reasoning` are the job's request
    defaults, which a row's own fields override.
    """

    job: str | None = None
    format: str | None = None
    encoding: str | None = None
    prompt_field: str | None = None
    template: str | None = None
    id_field: str | None = None
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    reasoning: bool | None = None
    strict: bool = False
    replace: bool = False

    def __post_init__(self) -> None:
        if self.prompt_field is not None and self.template is not None:
            raise ConfigError("--prompt-field and --template exclude each other: the prompt "
                              "comes from one field or from the template")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ConfigError(f"--temperature must be in [0, 2], got {self.temperature}")
        for flag, value in (("--job", self.job), ("--model", self.model),
                            ("--prompt-field", self.prompt_field), ("--id-field", self.id_field)):
            if value is not None and not value.strip():
                raise ConfigError(f"{flag} must not be empty")

    def job_name(self, path: str) -> str:
        """The job's name: `job`, else the file's stem (standard input needs `job`)."""
        if self.job is not None:
            return self.job
        if path == STDIN:
            raise ConfigError("--job is required when reading standard input")
        return Path(path).stem

    def mapper(self) -> RowMapper:
        """The row mapping these options describe."""
        return RowMapper(
            FieldMap(prompt_field=self.prompt_field or "prompt", template=self.template,
                     id_field=self.id_field),
            RequestSettings(model=self.model, system_prompt=self.system,
                            max_tokens=self.max_tokens, temperature=self.temperature,
                            reasoning=self.reasoning))

    def job_defaults(self) -> dict[str, Any]:
        """What the job record keeps of these options: the ones given."""
        kept = {k: v for k, v in asdict(self).items() if k not in ("job", "strict", "replace")}
        return {k: v for k, v in kept.items() if v is not None}


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did. `rows_read` = `inserted` + `present`; `invalid` counts this file's
    invalid rows (stored now or before), `invalid_reasons` the first few with their lines;
    `changed` holds the first changed keys and `changed_count` all of them."""

    job: Job
    rows_read: int
    inserted: int
    present: int
    invalid: int
    invalid_reasons: tuple[str, ...]
    changed: tuple[str, ...]
    changed_count: int
    replaced: int


def ingest(repo: Repository, path: str, options: IngestOptions) -> IngestReport:
    """Load the prompt file at `path` (`-`: JSONL from standard input) into its job.

    File-level problems raise InputFileError or ConfigError before anything is stored; with
    `options.strict` the first bad row raises RowError and nothing is stored.
    """
    name = options.job_name(path)
    with InputFile(path, options.mapper(), fmt=options.format,
                   encoding=options.encoding) as source:
        job = repo.ensure_job(name, source=_source_of(path), defaults=options.job_defaults())
        stream = _ItemStream(source, strict=options.strict)
        added = repo.add_items(job.id, stream.items(source), replace=options.replace,
                               commit_every=None if options.strict else COMMIT_ROWS,
                               on_repeat=stream.repeat, keep_changed=REPORTED_CHANGED)
    return IngestReport(
        job=job, rows_read=stream.rows_read, inserted=added.inserted, present=added.present,
        invalid=stream.invalid, invalid_reasons=tuple(stream.reasons),
        changed=tuple(added.changed), changed_count=added.changed_count,
        replaced=added.replaced)


class _ItemStream:
    """The rows of one file on their way into the store, counted as they pass; the invalid
    ones become invalid items (or, when strict, stop everything)."""

    def __init__(self, source: InputFile, *, strict: bool):
        self.source = source
        self.strict = strict
        self.rows_read = 0
        self.invalid = 0
        self._reasons: list[tuple[int, str]] = []

    @property
    def reasons(self) -> list[str]:
        """The first invalid rows' reasons, in file order."""
        return [reason for _line, reason in self._reasons]

    def items(self, rows: Iterable[Row]) -> Iterator[NewItem]:
        """One store item per row."""
        for row in rows:
            self.rows_read += 1
            if row.error is None:
                yield NewItem(row.key, row.number, row.input_json, row.request_json,
                              row.request_hash, row.model)
            else:
                yield self._invalid(row.key, row.number, row.input_json, row.error)

    def repeat(self, item: NewItem, first_number: int) -> NewItem:
        """The item stored for a row whose key came before (add_items' on_repeat)."""
        where = self.source.location(item.row_index)
        first = self.source.location(first_number)
        error = RowError(f"{where}: the key {item.row_key!r} repeats {first} (the first "
                         "occurrence is kept)", field=self.source.mapper.fields.id_field or "id",
                         line=item.row_index)
        # A repeat that was invalid for another reason too is counted once.
        return self._invalid(synthetic_key(item.row_index), item.row_index, item.input_json,
                             error, counted=item.status == RowStatus.INVALID)

    def _invalid(self, key: str, number: int, input_json: str, error: RowError, *,
                 counted: bool = False) -> NewItem:
        if self.strict:
            raise RowError(f"{self.source.name} {error}", field=error.field, line=error.line)
        if not counted:
            self.invalid += 1
        # Repeats are found as they are written, after later rows: keep the earliest lines.
        self._reasons = sorted([*self._reasons, (number, str(error))])[:REPORTED_REASONS]
        return NewItem(key, number, input_json, None, None, None, status=RowStatus.INVALID.value,
                       error_code=INVALID_ROW_CODE, error_message=str(error))


def _source_of(path: str) -> str:
    return path if path == STDIN else os.path.abspath(path)
