"""Retrying finished rows (`foxbatch retry`): failed, invalid or cancelled rows go back to the
queue, optionally with changed request fields.

A re-queued row gets a renewed attempt budget (every attempt so far becomes free), and its
attempt rows stay in the store as history. Without changes, failed and cancelled rows are
re-queued as they are, in one statement. With changes (`--set max_tokens=256`), each row's
request is rebuilt, validated as ingest validates it, and stored with its new hash; a row the
change does not make valid stays as it is and the report says why. An invalid row never had a
request: its request is built from its input fields with the job's ingest settings (the changes
applied on top), so it is re-queued only if that now gives a valid request.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy import RowMapping

from foxbatch.errors import ConfigError, RowError
from foxbatch.ingest import IngestOptions
from foxbatch.inputs import FALSE_WORDS, SYNTHETIC_KEY_PREFIX, TRUE_WORDS
from foxbatch.models import canonical_json, request_hash, validate_body
from foxbatch.store import Repository
from foxbatch.store.records import Job, RequestChange

RETRYABLE_STATUSES = ("failed", "invalid", "cancelled")
REPORTED_REASONS = 5
CHANGE_BATCH = 1_000
NULL_WORDS = frozenset({"null", "none"})
# --set names the request's fields; the job's ingest settings call two of them differently.
INGEST_NAMES = {"model": "model", "system_prompt": "system", "max_tokens": "max_tokens",
                "temperature": "temperature", "reasoning": "reasoning"}


@dataclass(frozen=True)
class RetrySelection:
    """Which finished rows to retry: those in `statuses`, and with one of `codes` if given."""

    statuses: tuple[str, ...]
    codes: tuple[str, ...] = ()

    @classmethod
    def from_flags(cls, *, failed: bool = False, invalid: bool = False, cancelled: bool = False,
                   codes: Sequence[str] = ()) -> RetrySelection:
        """The rows the flags name; with no state flag, failed rows (failed and invalid ones
        when codes are given)."""
        chosen = [s for s, wanted in zip(RETRYABLE_STATUSES, (failed, invalid, cancelled),
                                         strict=True) if wanted]
        if not chosen:
            chosen = ["failed", "invalid"] if codes else ["failed"]
        return cls(tuple(chosen), tuple(codes))

    def wants(self, item: RowMapping) -> bool:
        """True when the row is one of those selected."""
        return item["status"] in self.statuses and (
            not self.codes or item["error_code"] in self.codes)


@dataclass
class RetryReport:
    """What a retry did: rows re-queued, rows left as they were and the first reasons why."""

    requeued: int = 0
    refused: int = 0
    reasons: list[str] = field(default_factory=list)

    def refuse(self, row_key: str, reason: str) -> None:
        """Count a row that stays as it is."""
        self.refused += 1
        if len(self.reasons) < REPORTED_REASONS:
            self.reasons.append(f"row {row_key}: {reason}")


def parse_changes(pairs: Sequence[str]) -> dict[str, Any]:
    """The request fields `FIELD=VALUE` pairs set, typed and checked; `FIELD=null` removes an
    optional field. ConfigError for an unknown field or a value it cannot take."""
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or name not in _PARSERS:
            raise ConfigError(f"--set {pair!r}: use FIELD=VALUE with FIELD one of "
                              f"{', '.join(_PARSERS)}")
        if text.strip().lower() in NULL_WORDS:
            if name == "model":
                raise ConfigError(f"--set {pair!r}: every request needs a model")
            changes[name] = None
            continue
        try:
            changes[name] = _PARSERS[name](text.strip())
        except ValueError as exc:
            raise ConfigError(f"--set {pair!r}: {exc}") from None
    return changes


def retry_job(repo: Repository, job: Job, selection: RetrySelection,
              changes: Mapping[str, Any] | None = None) -> RetryReport:
    """Re-queue the selected finished rows of `job`, with `changes` to their requests."""
    report = RetryReport()
    rebuild = _Rebuilder(job, changes or {})
    as_they_are = [] if changes else [s for s in selection.statuses if s != "invalid"]
    if as_they_are:
        report.requeued += repo.requeue_finished(job.id, as_they_are, selection.codes or None)
    rebuilt = [s for s in selection.statuses if s not in as_they_are]
    if rebuilt:
        picked = (item for item in repo.iter_items(job.id, statuses=rebuilt)
                  if selection.wants(item))
        changed = _changes_of(picked, rebuild, report)
        while batch := list(islice(changed, CHANGE_BATCH)):
            report.requeued += repo.requeue_changed(batch)
    return report


def _changes_of(items: Iterator[RowMapping], rebuild: Callable[[RowMapping], RequestChange],
                report: RetryReport) -> Iterator[RequestChange]:
    for item in items:
        try:
            yield rebuild(item)
        except RowError as error:
            report.refuse(item["row_key"], str(error))


class _Rebuilder:
    """Builds a row's new request: its stored request (or, for an invalid row, its input
    fields through the job's ingest settings) with the changes applied, validated."""

    def __init__(self, job: Job, changes: Mapping[str, Any]):
        self.changes = dict(changes)
        ingest = IngestOptions(**job.defaults)
        overrides = {INGEST_NAMES[k]: v for k, v in self.changes.items()}
        self.mapper = dataclasses.replace(ingest, **overrides).mapper()

    def __call__(self, item: RowMapping) -> RequestChange:
        body = self._body(item)
        for name, value in self.changes.items():
            if name == "system_prompt" and "messages" in body and value is not None:
                raise RowError("system_prompt does not apply to a row with messages")
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        validate_body(body)
        text = canonical_json(body)
        return RequestChange(item["id"], item["status"], text, request_hash(text), body["model"])

    def _body(self, item: RowMapping) -> dict[str, Any]:
        if item["request"] is not None:
            return json.loads(item["request"])
        if item["row_key"].startswith(SYNTHETIC_KEY_PREFIX):
            raise RowError("the row has no key of its own (its key repeats an earlier row's, "
                           "or it lacks the id field); fix the input file and ingest it again")
        fields = json.loads(item["input"])
        if not isinstance(fields, dict):
            raise RowError("the row is not an object")
        return self.mapper.body(fields)


def _text(text: str) -> str:
    if not text:
        raise ValueError("the value is empty")
    return text


def _max_tokens(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("max_tokens must be a whole number") from None
    if value < 1:
        raise ValueError("max_tokens must be at least 1")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("temperature must be a number") from None
    if not 0 <= value <= 2:
        raise ValueError("temperature must be in [0, 2]")
    return value


def _boolean(text: str) -> bool:
    word = text.lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError("use true or false")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "model": _text, "system_prompt": _text, "max_tokens": _max_tokens,
    "temperature": _temperature,
    "reasoning": _boolean,
}
