"""Ingest: a prompt file becomes rows in the store; nothing is sent.

`ingest(repo, path, options)` reads the file (foxbatch.inputs) and stores every row as an item
of the job: good rows `queued`, the others `invalid` with error code "invalid_row" and a message
that names the line and the field, so that status and export show them. Malformed lines, lines
that are not objects and repeated keys (the first occurrence wins; the repeat is stored under
the key "~line:<number>") are invalid rows too. Good rows are ingested regardless, unless
`strict`, which refuses the whole file at its first bad row and stores nothing.

Ingesting is idempotent: a key already in the job is not added again; keys whose content
changed are reported, and re-queued only with `replace`. `submit` and `run` call `ingest` first.

Reading and validating a row costs about as much as storing it, and the store takes one writer
at a time: a large file is read by a second process (`_ReaderProcess`) while this one writes.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from foxbatch.errors import InputFileError
from foxbatch.inputs import STDIN, InputFile, Row
from foxbatch.models import RowStatus
from foxbatch.reading import (
    INVALID_ROW_CODE,
    READER_CHUNK_ROWS,
    IngestOptions,
    ItemStream,
)
from foxbatch.store import Repository
from foxbatch.store.records import Job, NewItemFields
from foxbatch.store.repository import COMMIT_ROWS

__all__ = ["INVALID_ROW_CODE", "IngestOptions", "IngestPlan", "IngestReport", "ingest",
           "plan_ingest"]

# How much of a large ingest the report keeps: the first changed keys.
REPORTED_CHANGED = 1_000
# Files from this size on are read by a reader process (it starts in about 0.1 s).
READER_MIN_BYTES = 16 * 2**20
READER_QUEUE_CHUNKS = 24
_READER_COMMAND = "from foxbatch.reading import serve_reader; serve_reader()"


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
        stream = ItemStream(source, strict=options.strict)
        with _items_of(source, stream, options) as items:
            added = repo.add_items(job.id, items, replace=options.replace,
                                   commit_every=None if options.strict else COMMIT_ROWS,
                                   on_repeat=stream.repeat, keep_changed=REPORTED_CHANGED)
    return IngestReport(
        job=job, rows_read=stream.rows_read, inserted=added.inserted, present=added.present,
        invalid=stream.invalid, invalid_reasons=tuple(stream.reasons),
        changed=tuple(added.changed), changed_count=added.changed_count,
        replaced=added.replaced)


def _source_of(path: str) -> str:
    return path if path == STDIN else os.path.abspath(path)


@contextmanager
def _items_of(source: InputFile, stream: ItemStream,
              options: IngestOptions) -> Iterator[Iterator[NewItemFields]]:
    """The file's items, read in this process, or for a large file by a reader process."""
    large = source.path != STDIN and os.path.getsize(source.path) >= READER_MIN_BYTES
    if not large or (os.cpu_count() or 1) < 2 or not sys.executable:
        yield stream.items(source)
        return
    reader = _ReaderProcess(source, options)
    try:
        yield reader.items(stream)
    finally:
        reader.close()


class _ReaderProcess:
    """A subprocess that reads and validates the file and sends its items back in chunks.

    A plain subprocess running `serve_reader` rather than multiprocessing, which would run the
    caller's __main__ script again in the child. Messages are pickled tuples on its standard
    output: ("items", [NewItem fields, ...]), then ("done", counts), or ("error", exception).
    A thread here takes them off the pipe as they come, into a bounded queue, so the reader
    keeps reading while this process writes a transaction (the two run side by side; with
    the pipe alone, the reader stalled as soon as its 64 KiB were full).
    """

    def __init__(self, source: InputFile, options: IngestOptions):
        self.name = source.name
        self._finished = False
        # The child must import this very foxbatch, installed or not.
        package_root = str(Path(__file__).resolve().parents[1])
        search_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-c", _READER_COMMAND, source.path, json.dumps(asdict(options))],
            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": search_path})
        self._messages: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=READER_QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._receiver = threading.Thread(target=self._receive_all, daemon=True)
        self._receiver.start()

    def items(self, stream: ItemStream) -> Iterator[NewItemFields]:
        """The items' fields as they arrive; the reader's counts go into `stream` at the end."""
        while True:
            kind, payload = self._messages.get()
            if kind == "error":
                raise payload
            if kind == "done":
                stream.absorb(*payload)
                self._finished = True
                return
            yield from payload

    def close(self) -> None:
        """Wait for the reader to exit; stop it first if its items are no longer wanted."""
        self._stop.set()
        if not self._finished:
            self._process.kill()
        self._drain()
        self._receiver.join()
        assert self._process.stdout is not None
        self._process.stdout.close()
        self._process.wait()

    def _receive_all(self) -> None:
        """The receiving thread: every message in order, ending with "done" or "error" (its
        own failure included, so that `items` never waits for ever)."""
        try:
            while not self._stop.is_set():
                message = self._receive()
                self._put(message)
                if message[0] != "items":
                    return
        except Exception as exc:  # whatever stops the receiving is the caller's to report
            self._put(("error", exc))

    def _put(self, message: tuple[str, Any]) -> None:
        while not self._stop.is_set():
            try:
                self._messages.put(message, timeout=0.1)
                return
            except queue.Full:
                continue

    def _drain(self) -> None:
        while True:
            try:
                self._messages.get_nowait()
            except queue.Empty:
                return

    def _receive(self) -> tuple[str, Any]:
        """The next message; if the stream ends or breaks, the error that says so."""
        try:
            return pickle.load(self._process.stdout)  # type: ignore[arg-type]
        except EOFError:
            pass
        except Exception:  # cut off or garbled: the reader died mid-message or is broken
            self._process.kill()
        code = self._process.wait()
        return "error", InputFileError(f"{self.name}: the process reading it stopped (exit "
                                       f"code {code})")


@dataclass(frozen=True)
class IngestPlan:
    """What `submit --dry-run` reports: what ingesting and submitting the file would do."""

    job_name: str
    rows_read: int = 0
    new: int = 0
    already_done: int = 0
    waiting: int = 0
    invalid: int = 0
    requests: int = 0
    prompt_tokens: int = 0


def plan_ingest(repo: Repository, path: str, options: IngestOptions,
                chunk_rows: int = READER_CHUNK_ROWS) -> IngestPlan:
    """Read the file as `ingest` would and compare it with the store; store and send nothing.

    New rows and rows stored but not yet submitted are the requests a submit would send; rows
    already finished (succeeded, failed or cancelled) are not sent again. Prompt tokens are
    estimated as characters / 4, as FoxAPI roughly counts them.
    """
    name = options.job_name(path)
    job = repo.find_job(name)
    counts = dict.fromkeys(("rows_read", "new", "already_done", "waiting", "invalid",
                            "requests", "prompt_tokens"), 0)
    seen: set[str] = set()
    with InputFile(path, options.mapper(), fmt=options.format,
                   encoding=options.encoding) as source:
        rows = iter(source)
        while chunk := list(islice(rows, chunk_rows)):
            stored = repo.statuses_of_keys(job.id, [r.key for r in chunk]) if job else {}
            for row in chunk:
                _plan_row(row, stored.get(row.key), row.key in seen, counts)
                seen.add(row.key)
    return IngestPlan(job_name=name, **counts)


def _plan_row(row: Row, stored: str | None, repeated: bool, counts: dict[str, int]) -> None:
    counts["rows_read"] += 1
    if row.error is not None or repeated or stored == RowStatus.INVALID.value:
        counts["invalid"] += 1
        return
    if stored in (RowStatus.SUCCEEDED.value, RowStatus.FAILED.value,
                  RowStatus.CANCELLED.value):
        counts["already_done"] += 1
        return
    if stored is None:
        counts["new"] += 1
    else:
        counts["waiting"] += 1
    if stored in (None, RowStatus.QUEUED.value):
        counts["requests"] += 1
        counts["prompt_tokens"] += _estimated_prompt_tokens(row.request_json or "{}")


def _estimated_prompt_tokens(request_json: str) -> int:
    body = json.loads(request_json)
    texts = [body.get("prompt") or "", body.get("system_prompt") or ""]
    texts += [m.get("content") if isinstance(m.get("content"), str) else json.dumps(
        m.get("content")) for m in body.get("messages") or []]
    return max(1, sum(len(t) for t in texts) // 4)
