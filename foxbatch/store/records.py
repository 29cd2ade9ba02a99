"""Plain records passed in and out of the repository: small, frozen, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Job:
    """A named batch of rows."""

    id: int
    name: str
    source: str | None
    defaults: dict[str, Any]
    created_at: float
    updated_at: float


class NewItem(NamedTuple):
    """One input row on its way into the store (queued, or invalid with a reason).

    A named tuple rather than a frozen dataclass: ingest makes one per input row, and this is
    about four times cheaper to build; the repository unpacks it straight into executemany
    parameters (its fields are in the order of `ingesting.NEW_ITEM_COLUMNS`).
    """

    row_key: str
    row_index: int
    input_json: str
    request_json: str | None
    request_hash: str | None
    model: str | None
    status: str = "queued"
    error_code: str | None = None
    error_message: str | None = None


# A NewItem's fields as a plain tuple, in the same order: what the ingest reader process sends
# (pickling a named tuple costs seven times as much) and all the store needs to insert a row.
NewItemFields = tuple[str, int, str, str | None, str | None, str | None, str, str | None,
                      str | None]


@dataclass
class AddResult:
    """What one `add_items` call did.

    `changed` lists the keys present with a different input or request (at most `keep_changed`
    of them when add_items was given a limit; `changed_count` counts them all). `repeated`
    counts rows whose key came earlier in the same call.
    """

    inserted: int = 0
    present: int = 0
    changed: list[str] = field(default_factory=list)
    replaced: int = 0
    changed_count: int = 0
    repeated: int = 0


@dataclass(frozen=True)
class SubmitClaim:
    """A queued row claimed for submission: its attempt row is committed before the POST."""

    item_id: int
    job_id: int
    row_key: str
    request_json: str
    request_hash: str
    model: str | None
    attempt: int
    free_attempts: int
    lease_token: str

    @property
    def budget_used(self) -> int:
        """Attempts that count against --max-attempts, this one included."""
        return self.attempt - self.free_attempts


@dataclass(frozen=True)
class PollClaim:
    """A pending row claimed for one poll (its next_poll_at doubles as the lease)."""

    item_id: int
    job_id: int
    task_id: str
    model: str | None
    attempt: int
    free_attempts: int
    polls: int
    submitted_at: float | None
    lease_token: str

    @property
    def budget_used(self) -> int:
        """Attempts that count against --max-attempts, the current one included."""
        return self.attempt - self.free_attempts


# Outcomes: what a worker learned about a claimed row. The repository applies a mixed batch of
# them in one transaction (a group commit); each applies only if the row is still owned by the
# same lease token and in the expected state (compare-and-set).


@dataclass(frozen=True)
class TaskCreated:
    """The POST answered with a task id: submitting -> pending."""

    item_id: int
    lease_token: str
    attempt: int
    task_id: str
    sent_at: float
    next_poll_at: float


@dataclass(frozen=True)
class TaskSucceeded:
    """The task completed with a result: pending -> succeeded."""

    item_id: int
    lease_token: str
    attempt: int
    result_json: str
    output: str | None
    finish_reason: str | None
    result_model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    finished_at: float


@dataclass(frozen=True)
class PollLater:
    """The task is not finished yet: stays pending, looked at again at `next_poll_at`.

    `looked` False: the claim was released without a GET (its look was moved), so it does
    not count as a poll. `least_duration`: the shortest duration the task's progress allows
    (None: it showed no usable progress; what was stored before stays)."""

    item_id: int
    lease_token: str
    next_poll_at: float
    looked: bool = True
    least_duration: float | None = None


@dataclass(frozen=True)
class Requeue:
    """Try the row again at `next_attempt_at`: submitting|pending -> queued.

    `attempt_outcome` is written on the attempt row; `in_doubt` counts an in-doubt resubmission;
    `free` gives the attempt back to the retry budget (429 or never sent: no task was created).
    """

    item_id: int
    lease_token: str
    expected_status: str
    attempt: int
    attempt_outcome: str
    next_attempt_at: float
    error_code: str | None
    error_message: str | None
    http_status: int | None = None
    in_doubt: bool = False
    free: bool = False


@dataclass(frozen=True)
class Fail:
    """Give up on the row: submitting|pending -> failed with a code and a message."""

    item_id: int
    lease_token: str
    expected_status: str
    attempt: int
    attempt_outcome: str
    error_code: str
    error_message: str
    http_status: int | None = None
    in_doubt: bool = False


Outcome = TaskCreated | TaskSucceeded | PollLater | Requeue | Fail


@dataclass
class Applied:
    """How many outcomes of a batch took effect; the rest were refused (lease lost)."""

    applied: int = 0
    refused: int = 0


@dataclass(frozen=True)
class Worker:
    """One worker process as the workers table knows it, with the rows it holds a lease on.

    `job_ids` is None for a worker that serves every job. `submitting` and `polling` count the
    rows it has claimed and not yet given back.
    """

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    lease_seconds: float
    job_ids: list[int] | None
    submitting: int = 0
    polling: int = 0

    def state(self, now: float) -> str:
        """`stopped` (cleanly), `dead` (no heartbeat for lease_seconds: its rows are being
        taken over) or `live`."""
        if self.stopped_at is not None:
            return "stopped"
        return "dead" if now - self.heartbeat_at > self.lease_seconds else "live"


@dataclass(frozen=True)
class ErrorCount:
    """One error code of a job: how many rows carry it now, and one of their messages."""

    code: str
    count: int
    example: str | None


@dataclass(frozen=True)
class JobStats:
    """The totals `foxbatch status` shows for one job.

    `attempts` sums every row's submissions; `first_submitted_at` and `last_finished_at` bound
    the work done so far; `finished_since` counts rows that finished at or after the time the
    caller asked about (the recent throughput).
    """

    counts: dict[str, int]
    attempts: int
    in_doubt_resubmits: int
    prompt_tokens: int
    completion_tokens: int
    first_submitted_at: float | None
    last_finished_at: float | None
    finished_since: int
    errors: list[ErrorCount]


@dataclass(frozen=True)
class RequestChange:
    """A terminal row re-queued with a new request (`foxbatch retry --set`): applies only while
    the row is still in `expected_status`."""

    item_id: int
    expected_status: str
    request_json: str
    request_hash: str
    model: str
