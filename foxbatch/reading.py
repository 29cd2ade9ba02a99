"""Reading a prompt file into store items: the ingest options, the rows' way into items (invalid
rows and repeats included), and the reader process that does this beside the writing one.

Nothing here touches the database, and nothing imports SQLAlchemy: the reader process
(`serve_reader`) starts in a tenth of a second.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
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
from foxbatch.store.records import NewItem

INVALID_ROW_CODE = "invalid_row"
# How much of a large ingest the report keeps: the first reasons.
REPORTED_REASONS = 5
READER_CHUNK_ROWS = 2_000


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



class ItemStream:
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

    def counts(self) -> tuple[int, int, list[tuple[int, str]]]:
        """Rows read, invalid rows and the first reasons: what a reader process reports."""
        return self.rows_read, self.invalid, self._reasons

    def absorb(self, rows_read: int, invalid: int, reasons: list[tuple[int, str]]) -> None:
        """Add the counts of the reader process that read the rows."""
        self.rows_read += rows_read
        self.invalid += invalid
        self._reasons = sorted([*self._reasons, *reasons])[:REPORTED_REASONS]

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
        self.absorb(0, 0, [(number, str(error))])
        return NewItem(key, number, input_json, None, None, None, status=RowStatus.INVALID.value,
                       error_code=INVALID_ROW_CODE, error_message=str(error))


def serve_reader() -> None:
    """The reader process (argv: path, IngestOptions as JSON): send the file's items, then the
    counts, on standard output."""
    path, options = sys.argv[1], IngestOptions(**json.loads(sys.argv[2]))
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not land in the item stream
    try:
        for message in _messages_of(path, options):
            pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.close()
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        return
    except OSError:  # the parent stopped listening: nothing left to do
        os._exit(1)


def _messages_of(path: str, options: IngestOptions) -> Iterator[tuple[str, Any]]:
    try:
        with InputFile(path, options.mapper(), fmt=options.format,
                       encoding=options.encoding) as source:
            stream = ItemStream(source, strict=options.strict)
            items = stream.items(source)
            # Plain tuples: pickling named tuples costs seven times as much.
            while chunk := [tuple(item) for item in islice(items, READER_CHUNK_ROWS)]:
                yield "items", chunk
            yield "done", stream.counts()
    except Exception as exc:  # whatever stops the reading is the parent's to report
        yield "error", exc
