"""Prompt files -> rows -> validated requests, streamed: JSONL, CSV and Parquet.

Reading takes two steps. A reader turns the file into `Record`s, one at a time (CSV and Parquet
chunk by chunk, never the whole file): the row's fields as parsed and its own text for the
store (`input_json`). `RowMapper` turns a record's fields into a request, or into the RowError
saying why it cannot be one. `InputFile` puts the two together and first checks the file as a
whole, so that a file-level problem is raised before any row is used.

- JSONL: one JSON object per line, blank lines skipped; a row's number is its line number and
  its `input_json` is the line as written. `-` reads JSONL from standard input.
- CSV: a header row, then records; every cell stays the exact string in the file (so "", "NA",
  "null" and "007" round-trip); rows are numbered from 1 after the header. UTF-8, with or
  without a byte-order mark, unless an encoding is given.
- Parquet: read batch by batch; rows numbered from 1.

A line that is not a JSON object keeps its text under "_raw", a CSV record whose cells do not
match the header its cells. A row's key is its `id` field (or the `--id-field`; `custom_id` is
recognised too), else its number. Keys starting with "~line:" are reserved: ingest stores a row
whose own key cannot be used (a repeated key) under "~line:<number>".
"""

from __future__ import annotations

import codecs
import csv
import io
import string
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain, islice
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TextIO, TypeVar

import orjson

from foxbatch.errors import ConfigError, InputFileError, RowError
from foxbatch.models import (
    MAX_PROMPT_CHARS,
    canonical_json,
    request_body,
    request_hash,
    validate_body,
)

FORMATS = ("jsonl", "csv", "parquet")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet",
              ".pq": "parquet"}
STDIN = "-"
# The file-level checks (is there a prompt field at all, does every row have a model) look at
# this many rows first, so a file missing the prompt column fails before anything is stored.
SNIFF_ROWS = 100
PARQUET_BATCH_ROWS = 10_000
# csv refuses cells over 128 KiB by default; a long prompt must reach validation, which names
# the row and the limit, rather than stop the whole file.
CSV_FIELD_LIMIT = 1 << 26
RAW_FIELD = "_raw"
SYNTHETIC_KEY_PREFIX = "~line:"
KEY_FIELDS = ("id", "custom_id")
SYSTEM_FIELDS = ("system_prompt", "system")
SETTING_FIELDS = frozenset({"model", *SYSTEM_FIELDS, "max_tokens", "temperature", "reasoning"})
# A row with any of these fields has settings of its own or another form: no shortcut.
GENERAL_PATH_FIELDS = SETTING_FIELDS | {"messages"}
_PROMPT_SLOT = "\x00the prompt goes here\x00"
TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0"})

V = TypeVar("V")


class Record(NamedTuple):
    """One row as read: its number, the line it starts on, its fields (None when the row is
    not an object) with its own text for the store, or why it could not be read."""

    number: int
    line: int
    fields: dict[str, Any] | None
    input_json: str
    error: str | None


Records = Generator[Record, None, None]


class Row(NamedTuple):
    """One row ready for the store: a validated request, or the RowError saying why not."""

    key: str
    number: int
    input_json: str
    request_json: str | None
    request_hash: str | None
    model: str | None
    error: RowError | None


@dataclass(frozen=True)
class RequestSettings:
    """What a request asks for besides its prompt: the job's defaults (the command-line flags),
    or a row's settings, its own fields over those defaults."""

    model: str | None = None
    system_prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    reasoning: bool | None = None


@dataclass(frozen=True)
class FieldMap:
    """Where a row's prompt and key come from: a prompt field or a template, an id field."""

    prompt_field: str = "prompt"
    template: str | None = None
    id_field: str | None = None


def synthetic_key(number: int) -> str:
    """The key of a row whose own key cannot be used; no real key can take this form."""
    return f"{SYNTHETIC_KEY_PREFIX}{number}"


def template_fields(template: str) -> tuple[str, ...]:
    """The row fields a str.format template uses; ConfigError if it is not a usable template."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"--template {template!r}: {exc}") from None
    names: list[str] = []
    for _text, name, _spec, _conversion in parts:
        if name is None:
            continue
        root = name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise ConfigError(f"--template {template!r}: name the row's fields, like {{text}}, "
                              "not {} or {0}")
        if root not in names:
            names.append(root)
    if not names:
        raise ConfigError(f"--template {template!r} uses no field of the row, like {{text}}")
    return tuple(names)


class RowMapper:
    """Turns a row's fields into a request: the prompt from a field or a template (or the row's
    `messages`), the row's own settings over the job's defaults, the key from the id field."""

    def __init__(self, fields: FieldMap = FieldMap(),
                 defaults: RequestSettings = RequestSettings()):
        self.fields = fields
        self.defaults = defaults
        self.template_fields = template_fields(fields.template) if fields.template else ()
        self._around_prompt = _body_around_prompt(defaults)

    def to_row(self, record: Record) -> Row:
        """The row for `record`; its error (without the location) when it cannot be sent."""
        if record.fields is None:
            return _invalid(str(record.number), record, RowError(record.error or "unreadable"))
        try:
            key = self.key(record.fields, record.number)
        except RowError as error:
            return _invalid(synthetic_key(record.number), record, error)
        try:
            body_json, model = self.request(record.fields)
        except RowError as error:
            return _invalid(key, record, error)
        return Row(key, record.number, record.input_json, body_json, request_hash(body_json),
                   model, None)

    def request(self, fields: dict[str, Any]) -> tuple[str, str]:
        """The row's validated request as canonical JSON, and its model; RowError if none."""
        fast = self._default_request(fields)
        if fast is not None:
            return fast
        body = self.body(fields)
        validate_body(body)
        return canonical_json(body), body["model"]

    def _default_request(self, fields: dict[str, Any]) -> tuple[str, str] | None:
        """The common case made cheap: a text-form row with no settings of its own. Its request
        is the defaults' canonical JSON with the prompt's JSON in the middle, so only the prompt
        needs building and checking. None when the row needs the general path."""
        if self._around_prompt is None or not fields.keys().isdisjoint(GENERAL_PATH_FIELDS):
            return None
        prompt = self.prompt(fields)
        if not prompt or prompt.isspace() or len(prompt) > MAX_PROMPT_CHARS:
            return None  # the general path says what is wrong
        try:
            prompt_json = orjson.dumps(prompt).decode()
        except orjson.JSONEncodeError:
            return None
        prefix, suffix, model = self._around_prompt
        return prefix + prompt_json + suffix, model

    def key(self, fields: dict[str, Any], number: int) -> str:
        """The row's key: its id field, else its number."""
        name = self.fields.id_field
        if name is not None:
            if name not in fields:
                raise RowError(f"the row has no {name!r} field (--id-field)", field=name)
            return _key_text(fields[name], name)
        for name in KEY_FIELDS:
            if name in fields:
                return _key_text(fields[name], name)
        return str(number)

    def body(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The request body (not yet validated); RowError for a field that cannot be used."""
        settings = self.settings(fields)
        if settings.model is None:
            raise RowError("the row names no model and --model is not given", field="model")
        messages = fields.get("messages")
        if _given(messages):
            if settings.system_prompt is not None:
                raise RowError("system_prompt does not apply to a row with messages; put a "
                               "system message in messages instead", field="system_prompt")
            return request_body(settings.model, messages=_messages(messages),
                                max_tokens=settings.max_tokens,
                                temperature=settings.temperature, reasoning=settings.reasoning)
        return request_body(settings.model, prompt=self.prompt(fields),
                            system_prompt=settings.system_prompt, max_tokens=settings.max_tokens,
                            temperature=settings.temperature, reasoning=settings.reasoning)

    def settings(self, fields: dict[str, Any]) -> RequestSettings:
        """The row's settings: its own model, system_prompt (or system), max_tokens,
        temperature and reasoning fields over the job's defaults."""
        if fields.keys().isdisjoint(SETTING_FIELDS):
            return self.defaults
        defaults = self.defaults
        return RequestSettings(
            model=_setting(fields, "model", _text, defaults.model),
            system_prompt=self.system_prompt(fields),
            max_tokens=_setting(fields, "max_tokens", _integer, defaults.max_tokens),
            temperature=_setting(fields, "temperature", _number, defaults.temperature),
            reasoning=_setting(fields, "reasoning", _boolean, defaults.reasoning))

    def system_prompt(self, fields: dict[str, Any]) -> str | None:
        """The row's system_prompt (or system) field, else the job's."""
        for name in SYSTEM_FIELDS:
            value = fields.get(name)
            if _given(value):
                return _text(value, name)
        return self.defaults.system_prompt

    def prompt(self, fields: dict[str, Any]) -> str:
        """The prompt: the template filled with the row's fields, or the prompt field."""
        if self.fields.template is not None:
            return _fill(self.fields.template, fields)
        name = self.fields.prompt_field
        if name not in fields:
            raise RowError(f"the row has no {name!r} field", field=name)
        value = fields[name]
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RowError(f"{name} is empty", field=name)
        return _text(value, name)

    def has_prompt_source(self, fields: dict[str, Any]) -> bool:
        """True when the row has what a prompt is made from (or has messages)."""
        if "messages" in fields:
            return True
        if self.template_fields:
            return all(name in fields for name in self.template_fields)
        return self.fields.prompt_field in fields

    def no_prompt_reason(self, fields: dict[str, Any], noun: str) -> str:
        """Why a row like `fields` has no prompt, for a file-level error."""
        if self.template_fields:
            missing = [n for n in self.template_fields if n not in fields]
            return f"no {noun} {', '.join(map(repr, missing))} for --template"
        return (f"no {self.fields.prompt_field!r} {noun}; name the prompt's {noun} with "
                "--prompt-field or build the prompt with --template")


class InputFile:
    """A prompt file opened for reading, checked as a whole: iterate it for its `Row`s.

    Opening reads the first SNIFF_ROWS rows, so a missing or unreadable file, an unknown
    format, no prompt field at all, or no model for a row raise here, before any row is used.
    A file that cannot be decoded part-way raises InputFileError from the iteration.
    """

    def __init__(self, path: str, mapper: RowMapper, *, fmt: str | None = None,
                 encoding: str | None = None):
        self.path = path
        self.name = "standard input" if path == STDIN else path
        self.mapper = mapper
        _check_readable(path)
        self.format = detect_format(path, fmt)
        self._records = _records(path, self.format, encoding, self.name)
        try:
            self._first = list(islice(self._records, SNIFF_ROWS))
            self._check(self._first)
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[Row]:
        for record in chain(self._first, self._records):
            row = self.mapper.to_row(record)
            if row.error is not None:
                row = row._replace(error=self._located(row.error, record))
            yield row

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._records.close()

    @property
    def noun(self) -> str:
        """What a field is called in this format: a column of a table, a field of JSON."""
        return "field" if self.format == "jsonl" else "column"

    def location(self, number: int, line: int | None = None) -> str:
        """Where row `number` is, in words: "line 7", "row 3 (line 4)", "row 3"."""
        if self.format == "jsonl":
            return f"line {number}"
        if self.format == "csv" and line is not None:
            return f"row {number} (line {line})"
        return f"row {number}"

    def _located(self, error: RowError, record: Record) -> RowError:
        where = self.location(record.number, record.line)
        return RowError(f"{where}: {error}", field=error.field, line=record.number)

    def _check(self, records: Sequence[Record]) -> None:
        objects = [(r, r.fields) for r in records if r.fields is not None]
        if not objects:
            return
        if not any(self.mapper.has_prompt_source(fields) for _, fields in objects):
            reason = self.mapper.no_prompt_reason(objects[0][1], self.noun)
            raise InputFileError(f"{self.name}: {reason} (none in the first {len(objects)} rows)")
        if self.mapper.defaults.model is None:
            for record, fields in objects:
                if not _given(fields.get("model")):
                    where = self.location(record.number, record.line)
                    raise ConfigError(f"{self.name}: {where} names no model; pass --model (or "
                                      "give every row a model field)")


def detect_format(path: str, fmt: str | None = None) -> str:
    """The format of `path`: `fmt` if given, else from the extension; `-` is JSONL."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt!r}: use jsonl, csv or parquet")
        if path == STDIN and fmt != "jsonl":
            raise ConfigError("standard input (-) is read as JSONL only")
        return fmt
    if path == STDIN:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise InputFileError(f"{path}: cannot tell the format from the extension "
                             f"{suffix or '(none)'!r}; pass --format jsonl, csv or parquet")
    return EXTENSIONS[suffix]


def _check_readable(path: str) -> None:
    if path == STDIN:
        return
    target = Path(path)
    if not target.exists():
        raise InputFileError(f"{path}: no such file")
    if target.is_dir():
        raise InputFileError(f"{path}: is a directory, not a prompt file")


# -- readers ---------------------------------------------------------------------------------


def _records(path: str, fmt: str, encoding: str | None, name: str) -> Records:
    if fmt == "parquet":
        return _parquet_records(path)
    text_encoding = _text_encoding(encoding)
    if fmt == "csv":
        return _decoded(_csv_records(path, text_encoding, name), path, text_encoding, name)
    return _decoded(_jsonl_records(path, text_encoding), path, text_encoding, name)


def _text_encoding(encoding: str | None) -> str:
    """The codec to read text with: UTF-8 skips a byte-order mark if there is one."""
    name = encoding or "utf-8"
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise ConfigError(f"--encoding {name!r}: unknown encoding") from None
    return "utf-8-sig" if canonical == "utf-8" else name


@contextmanager
def _open_text(path: str, encoding: str, newline: str) -> Iterator[TextIO]:
    if path == STDIN:
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding=encoding, newline=newline)
        try:
            yield stream
        finally:
            stream.detach()  # closing the wrapper would close standard input itself
        return
    try:
        handle = open(path, encoding=encoding, newline=newline)  # noqa: SIM115
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with handle:
        yield handle


def _jsonl_records(path: str, encoding: str) -> Records:
    with _open_text(path, encoding, "\n") as stream:
        for number, line in enumerate(stream, 1):
            text = line.strip()
            if text:
                yield _json_record(number, text)


def _json_record(number: int, text: str) -> Record:
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Record(number, number, None, _raw_json(text),
                      f"not valid JSON ({exc.msg} at column {exc.colno})")
    if type(fields) is not dict:
        return Record(number, number, None, _raw_json(text),
                      f"not a JSON object but {_kind(fields)}")
    return Record(number, number, fields, text, None)


def _csv_records(path: str, encoding: str, name: str) -> Records:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with _open_text(path, encoding, "") as stream:
        reader = csv.reader(stream)
        try:
            header = next(reader, None)
            if header is None:
                return
            _check_header(header, name)
            number, line = 0, reader.line_num + 1
            for cells in reader:
                if cells:
                    number += 1
                    yield _csv_record(number, line, header, cells)
                line = reader.line_num + 1
        except csv.Error as exc:
            raise InputFileError(f"{name}: line {reader.line_num}: {exc}") from None


def _check_header(header: list[str], name: str) -> None:
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise InputFileError(f"{name}: the header names the column {column!r} twice")
        seen.add(column)


def _csv_record(number: int, line: int, header: list[str], cells: list[str]) -> Record:
    if len(cells) != len(header):
        return Record(number, line, None, _json_text({RAW_FIELD: cells}),
                      f"has {len(cells)} cells where the header has {len(header)}")
    fields = dict(zip(header, cells, strict=True))
    return Record(number, line, fields, _json_text(fields), None)


def _parquet_records(path: str) -> Records:
    import pyarrow as pa  # imported here: pyarrow takes a while to load and only Parquet needs it
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(f"{path}: not a readable Parquet file ({exc})") from None
    with parquet:
        number = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for fields in batch.to_pylist():
                number += 1
                yield Record(number, number, fields, _json_text(fields), None)


def _decoded(records: Records, path: str, encoding: str, name: str) -> Records:
    """`records`, with a decoding error turned into one that names the line and the fix."""
    line = 0
    try:
        for record in records:
            line = record.line
            yield record
    except UnicodeDecodeError as exc:
        found = None if path == STDIN else _undecodable_line(path, encoding)
        where = f"line {found}" if found else f"a line after line {line}"
        shown = "utf-8" if encoding == "utf-8-sig" else encoding
        raise InputFileError(
            f"{name}: {where} is not valid {shown} ({exc.reason}); pass the file's encoding "
            "with --encoding, e.g. --encoding latin-1 or --encoding cp1252") from None
    finally:
        records.close()


def _undecodable_line(path: str, encoding: str) -> int | None:
    """The first line of `path` that `encoding` cannot decode (text is read ahead in blocks,
    so the error surfaces a little before or after the line itself)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, 1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError:
                return number
    return None


# -- fields ------------------------------------------------------------------------------------


def _body_around_prompt(defaults: RequestSettings) -> tuple[str, str, str] | None:
    """The canonical JSON of a text-form request with these settings, split around its prompt,
    and the model; None when the settings alone cannot make a valid request."""
    if defaults.model is None:
        return None
    body = request_body(defaults.model, prompt=_PROMPT_SLOT, system_prompt=defaults.system_prompt,
                        max_tokens=defaults.max_tokens, temperature=defaults.temperature,
                        reasoning=defaults.reasoning)
    try:
        validate_body(body)
    except RowError:
        return None
    parts = canonical_json(body).split(canonical_json(_PROMPT_SLOT))
    if len(parts) != 2:  # the slot text also appears in a setting: take the general path
        return None
    return parts[0], parts[1], defaults.model


def _invalid(key: str, record: Record, error: RowError) -> Row:
    return Row(key, record.number, record.input_json, None, None, None, error)


def _key_text(value: Any, name: str) -> str:
    if type(value) is str and value and not value.isspace():
        if value.startswith(SYNTHETIC_KEY_PREFIX):
            raise RowError(f"{name} {value!r}: keys starting with {SYNTHETIC_KEY_PREFIX!r} are "
                           "reserved", field=name)
        return value
    if value is None or isinstance(value, str):
        raise RowError(f"{name} is empty", field=name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RowError(f"{name} must be a string or a whole number, got {_kind(value)}", field=name)


def _given(value: Any) -> bool:
    """False for an absent setting: null, an empty CSV cell, NaN (a missing Parquet value)."""
    return value is not None and value != "" and value == value


def _setting(fields: dict[str, Any], name: str, convert: Callable[[Any, str], V],
             default: V | None) -> V | None:
    value = fields.get(name)
    return convert(value, name) if _given(value) else default


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise RowError(f"{name} must be a string, got {_kind(value)}", field=name)


def _integer(value: Any, name: str) -> int:
    number = _from_text(value, int, float) if isinstance(value, str) else value
    if isinstance(number, float) and number.is_integer():
        return int(number)
    if isinstance(number, int) and not isinstance(number, bool):
        return number
    raise RowError(f"{name} must be a whole number, got {_shown(value)}", field=name)


def _number(value: Any, name: str) -> float:
    number = _from_text(value, float) if isinstance(value, str) else value
    if isinstance(number, int | float) and not isinstance(number, bool):
        return float(number)
    raise RowError(f"{name} must be a number, got {_shown(value)}", field=name)


def _from_text(text: str, *kinds: Callable[[str], Any]) -> Any:
    """A CSV cell read as the first of `kinds` that accepts it, else None."""
    for kind in kinds:
        try:
            return kind(text)
        except ValueError:
            continue
    return None


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise RowError(f"{name} must be true or false, got {_shown(value)}", field=name)


def _messages(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RowError(f"messages is not valid JSON ({exc})", field="messages") from None
    if not isinstance(value, list):
        raise RowError(f"messages must be an array of messages, got {_kind(value)}",
                       field="messages")
    return value


def _fill(template: str, fields: dict[str, Any]) -> str:
    try:
        return template.format_map(fields)
    except KeyError as exc:
        name = str(exc.args[0])
        raise RowError(f"the row has no {name!r} field for --template", field=name) from None
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise RowError(f"--template cannot be filled from this row ({exc})") from None


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _json_text(value: Any) -> str:
    return orjson.dumps(value, default=_json_default).decode()


def _raw_json(text: str) -> str:
    return _json_text({RAW_FIELD: text})


def _json_default(value: Any) -> Any:
    """Parquet values orjson does not write itself (it does dates and times)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)
