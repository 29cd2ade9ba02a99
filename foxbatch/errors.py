"""The one exception tree of foxbatch.

    FoxbatchError                 base of everything foxbatch raises on purpose
    ├── ConfigError               bad flags, settings or environment (exit 1)
    ├── InputFileError            a prompt file that cannot be read at all (exit 1)
    ├── RowError                  one input row that cannot become a request
    ├── StoreError                the task store
    │   ├── SchemaTooNewError     the database was written by a newer foxbatch
    │   └── UnknownJobError       no job of that name
    └── ApiError                  FoxAPI answered with an error, or could not be reached
        ├── FatalApiError         stops the whole run (exit 3), resumable
        │   ├── AuthenticationError   401: missing or invalid key
        │   └── QuotaError            402: balance too low
        ├── RequestRejectedError  400 / 422: the request can never succeed as is
        ├── RateLimitedError      429: slow down (retry_after seconds, if given)
        ├── TaskNotFoundError     404 on poll: the task is gone
        ├── TransientApiError     5xx, 503 channel errors, temporary 422 codes
        └── TransportError        the request failed below HTTP
            ├── NotSentError      nothing reached the server (refused, DNS): no task exists
            └── InDoubtError      sent, then timed out or reset: a task may exist

Every ApiError carries `status` (HTTP status or None), `code` (FoxAPI error code or None) and
a message that never contains the API key.
"""

from __future__ import annotations


class FoxbatchError(Exception):
    """Base class of every error foxbatch raises on purpose."""


class ConfigError(FoxbatchError):
    """Invalid flags, settings or environment."""


class InputFileError(FoxbatchError):
    """A prompt file that cannot be read at all (missing, a directory, no prompt field)."""


class RowError(FoxbatchError):
    """One input row that cannot become a valid request.

    `field` names the offending field when there is one; `line` is the 1-based line or row.
    """

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None):
        super().__init__(message)
        self.field = field
        self.line = line


class StoreError(FoxbatchError):
    """A problem with the task store."""


class SchemaTooNewError(StoreError):
    """The database schema is newer than this version of foxbatch understands."""


class UnknownJobError(StoreError):
    """No job of the given name exists in the store."""


class ApiError(FoxbatchError):
    """FoxAPI answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class FatalApiError(ApiError):
    """An error that stops the whole run at once (the next run resumes)."""

    hint = ""


class AuthenticationError(FatalApiError):
    """401: the API key is missing or invalid."""

    hint = "set FOXAPI_API_KEY to a valid key, then run the same command again to resume"


class QuotaError(FatalApiError):
    """402: the account balance is too low."""

    hint = "top up the FoxAPI balance, then run the same command again to resume"


class RequestRejectedError(ApiError):
    """400 or 422: the request can never succeed as it is."""


class RateLimitedError(ApiError):
    """429: too many requests; `retry_after` is the server's hint in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class TaskNotFoundError(ApiError):
    """404 on poll: FoxAPI no longer knows the task."""


class TransientApiError(ApiError):
    """A server-side error that may pass (5xx, temporary 422 codes)."""


class TransportError(ApiError):
    """The request failed below HTTP."""


class NotSentError(TransportError):
    """The request never reached the server (connection refused, DNS): no task was created."""


class InDoubtError(TransportError):
    """The request was sent but no answer came back: a task may or may not exist."""
