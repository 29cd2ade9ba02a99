"""HTTP answers of the simulator: replies, FoxAPI error bodies (foxapi.md §4), dropped
connections, and sending them over ASGI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

# The error `type` FoxAPI puts in the body of each HTTP status (foxapi.md §4).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    404: "not_found",
    405: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
}

_JSON_HEADER = (b"content-type", b"application/json")


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: a status, a JSON document and extra headers; `drop` breaks it midway."""

    status: int
    payload: Any
    headers: tuple[tuple[bytes, bytes], ...] = ()
    drop: bool = False

    def encode(self) -> bytes:
        """The JSON body (orjson: encoding is a good part of the simulator's time per request)."""
        return orjson.dumps(self.payload)


class HttpError(Exception):
    """An error answer: raised anywhere while handling a request, sent as a FoxAPI error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after

    def reply(self) -> Reply:
        """The reply: `{"error": {"message", "type", "code"?}}`, plus `Retry-After` if set."""
        error = {"message": self.message, "type": ERROR_TYPES[self.status]}
        if self.code is not None:
            error["code"] = self.code
        headers = () if self.retry_after is None else (
            (b"retry-after", str(self.retry_after).encode("ascii")),)
        return Reply(self.status, {"error": error}, headers)


class ConnectionDropped(httpx.RemoteProtocolError):
    """The simulator broke the connection mid-response on purpose.

    Over real HTTP the server closes the socket and the client sees its own transport error.
    In-process (`httpx.ASGITransport`) this exception reaches the caller instead; it is an
    `httpx.RemoteProtocolError`, what httpx raises when a peer closes a response early.
    """


async def send_reply(send: Send, reply: Reply) -> None:
    """Send a complete response."""
    body = reply.encode()
    await send({"type": "http.response.start", "status": reply.status,
                "headers": _headers(reply, len(body))})
    await send({"type": "http.response.body", "body": body})


async def send_truncated(send: Send, reply: Reply) -> None:
    """Announce the whole body, send half of it, then break the connection."""
    body = reply.encode()
    await send({"type": "http.response.start", "status": reply.status,
                "headers": _headers(reply, len(body))})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    raise ConnectionDropped("simulated connection drop after the task was created")


def _headers(reply: Reply, length: int) -> list[tuple[bytes, bytes]]:
    return [_JSON_HEADER, (b"content-length", str(length).encode("ascii")), *reply.headers]
