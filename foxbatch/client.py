"""The FoxAPI client: submit a task, read a task, classify every failure.

The classification follows foxapi.md §4 and the crash rules of design.md. What matters most is
telling apart a submit that *proves* no task was created (connection refused, any 4xx) from one
that *may* have created a billed task (timeout or reset after sending, 5xx): the first raises
NotSentError or a 4xx error, the second InDoubtError.

Requests go out over a wire (foxbatch.wire): by default aiohttp's connection pool, called
directly (two small requests a task, and httpx's request and response objects would cost more
CPU than the exchange itself); with an httpx transport passed in (httpx.ASGITransport for the
simulator in-process and for fast tests), an httpx.AsyncClient over it. Both give the same
`Answer` and the classification below treats them alike.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from foxbatch.errors import (
    ApiError,
    AuthenticationError,
    InDoubtError,
    NotSentError,
    QuotaError,
    RateLimitedError,
    RequestRejectedError,
    TaskNotFoundError,
    TransientApiError,
    TransportError,
)
from foxbatch.wire import AiohttpWire, Answer, HttpxWire, Timeouts, Wire

log = logging.getLogger(__name__)

SUBMIT_PATH = "/v1/llm/generations"
TASK_PATH = "/v1/tasks/{task_id}"
MODELS_PATH = "/v1/configs/llm_generations_models"
MAX_RETRY_AFTER = 120.0
# 422 codes that describe a passing condition, not a bad request (foxapi.md §4).
TEMPORARY_422_CODES = frozenset({"no_compatible_channel", "service_unavailable_error",
                                 "no_available_model"})
GET_RETRIES = 3


@dataclass(frozen=True)
class TaskView:
    """What a poll learned about one task."""

    task_id: str
    status: str
    progress: int | None
    result: dict[str, Any] | None
    error_code: str | None
    error_message: str | None


class FoxClient:
    """An async FoxAPI client. Use as `async with FoxClient(...) as client:`."""

    def __init__(self, base_url: str, api_key: str | None, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 256, timeout: float = 60.0,
                 get_retries: int = GET_RETRIES):
        self.base_url = base_url.rstrip("/")
        self._get_retries = get_retries
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": user_agent()}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._submit_url = self.base_url + SUBMIT_PATH
        self._task_url = self.base_url + TASK_PATH
        self._wire = open_wire(transport, headers, Timeouts(connect=10.0, read=timeout,
                                                            pool=timeout), max_connections)

    async def __aenter__(self) -> FoxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._wire.aclose()

    async def submit(self, body_json: str) -> str:
        """POST one request body (canonical JSON text); return the new task id.

        Raises NotSentError / 4xx errors when no task can exist, InDoubtError when one may.
        """
        response = await self._send("POST", self._submit_url, content=body_json.encode("utf-8"))
        if response.status >= 500:
            raise InDoubtError(f"submit answered HTTP {response.status}: "
                               f"{_error_message(response)}", status=response.status,
                               code=_error_code(response))
        _raise_for_error(response)
        try:
            task_id = response.json()["id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InDoubtError("submit answered 200 without a readable task id",
                               status=response.status) from exc
        if not isinstance(task_id, str) or not task_id:
            raise InDoubtError("submit answered 200 with an empty task id", status=200)
        return task_id

    async def get_task(self, task_id: str) -> TaskView:
        """GET one task; transient failures are retried in-call (short, jittered)."""
        try:
            return await self._get_task_once(task_id)
        except (TransientApiError, TransportError):
            if self._get_retries <= 1:
                raise
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((TransientApiError, TransportError)),
            stop=stop_after_attempt(self._get_retries - 1),
            wait=wait_random_exponential(multiplier=0.1, max=2.0), reraise=True)
        async for attempt in retrying:
            with attempt:
                return await self._get_task_once(task_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_task_once(self, task_id: str) -> TaskView:
        response = await self._send("GET", self._task_url.format(
            task_id=quote(task_id, safe="")))
        if response.status == 404:
            raise TaskNotFoundError(f"task {task_id} not found", status=404,
                                    code=_error_code(response))
        if response.status >= 500:
            raise TransientApiError(f"poll answered HTTP {response.status}: "
                                    f"{_error_message(response)}", status=response.status)
        _raise_for_error(response)
        return parse_task(_json_body(response), task_id)

    async def list_models(self) -> list[str]:
        """The model ids this key may use."""
        response = await self._send("GET", self.base_url + MODELS_PATH)
        if response.status >= 500:
            raise TransientApiError(f"model list answered HTTP {response.status}",
                                    status=response.status)
        _raise_for_error(response)
        return [m["id"] for m in _json_body(response).get("data", []) if "id" in m]

    async def _send(self, method: str, url: str, *, content: bytes | None = None) -> Answer:
        try:
            return await self._wire.send(method, url, content)
        except (httpx.DecodingError, aiohttp.ClientPayloadError) as exc:
            # An answer came but its body could not be read (a proxy's page labelled gzip, a
            # body cut short): whatever was asked may have happened.
            raise InDoubtError(f"{method} got an answer that could not be read "
                               f"({type(exc).__name__}: {exc})") from exc
        except (httpx.TransportError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise classify_transport_error(exc, method) from exc


def user_agent() -> str:
    """foxbatch/<installed version>, or plain foxbatch when run from an uninstalled tree."""
    try:
        return f"foxbatch/{importlib.metadata.version('foxbatch')}"
    except importlib.metadata.PackageNotFoundError:
        return "foxbatch"


def open_wire(transport: httpx.AsyncBaseTransport | None, headers: dict[str, str],
              timeouts: Timeouts, max_connections: int) -> Wire:
    """aiohttp's pool sized for `max_connections` in flight, or an httpx client over
    `transport` when one is given."""
    if transport is None:
        return AiohttpWire(headers, timeouts, max_connections)
    return HttpxWire(transport, headers, timeouts)


def classify_transport_error(exc: BaseException, method: str) -> TransportError:
    """NotSentError if the request cannot have reached the server, else InDoubtError."""
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if _never_connected(exc):
        return NotSentError(f"{method} could not connect ({detail})")
    return InDoubtError(f"{method} got no answer ({detail})")


def _never_connected(exc: BaseException) -> bool:
    # aiohttp (the default wire) and httpx (over a transport passed in) each say it their way.
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return True
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return isinstance(exc, ConnectionRefusedError)


def _raise_for_error(response: Answer) -> None:
    status = response.status
    if status < 400:
        return
    code, message = _error_code(response), _error_message(response)
    text = f"HTTP {status}" + (f" {code}" if code else "") + f": {message}"
    if status == 401:
        raise AuthenticationError(f"FoxAPI refused the API key ({text})", status=401, code=code)
    if status == 402:
        raise QuotaError(f"FoxAPI balance too low ({text})", status=402, code=code)
    if status == 429:
        raise RateLimitedError(text, retry_after=_retry_after(response), status=429, code=code)
    if status == 422 and code in TEMPORARY_422_CODES:
        raise TransientApiError(text, status=status, code=code)
    if status in (400, 404, 422) or 400 <= status < 500:
        raise RequestRejectedError(text, status=status, code=code or f"http_{status}")
    raise ApiError(text, status=status, code=code)  # pragma: no cover - 1xx/3xx


def _retry_after(response: Answer) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


def _error_body(response: Answer) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_code(response: Answer) -> str | None:
    code = _error_body(response).get("code")
    return str(code) if code else None


def _error_message(response: Answer) -> str:
    message = _error_body(response).get("message")
    return str(message) if message else (response.reason or "no message")


def _json_body(response: Answer) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise TransientApiError(f"unreadable JSON in HTTP {response.status} answer",
                                status=response.status) from exc
    if not isinstance(body, dict):
        raise TransientApiError("answer is not a JSON object", status=response.status)
    return body


def parse_task(body: dict[str, Any], task_id: str) -> TaskView:
    """Read a task object (foxapi.md §3) defensively."""
    results = body.get("results")
    result = results[0] if isinstance(results, list) and results and isinstance(
        results[0], dict) else None
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    progress = body.get("progress")
    return TaskView(
        task_id=str(body.get("id") or task_id),
        status=str(body.get("status") or "unknown"),
        progress=progress if isinstance(progress, int | float) else None,
        result=result,
        error_code=str(error["code"]) if error.get("code") else None,
        error_message=str(error["message"]) if error.get("message") else None,
    )


def completion_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The export columns of one ChatCompletion: output, finish_reason, model, token counts."""
    choices = result.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    message = first.get("message") if isinstance(first.get("message"), dict) else {}
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    return {
        "output": _text(message.get("content")),
        "finish_reason": first.get("finish_reason"),
        "result_model": result.get("model"),
        "prompt_tokens": _int_or_none(usage.get("prompt_tokens")),
        "completion_tokens": _int_or_none(usage.get("completion_tokens")),
        "total_tokens": _int_or_none(usage.get("total_tokens")),
        "result_json": compact_json(result),
    }


def compact_json(value: Any) -> str:
    """`value` as compact JSON text, non-ASCII kept: orjson, or the standard library for what
    orjson does not write (wire.NonFiniteFloat, integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text(content: object) -> str | None:
    """Message content as text: a string as is, content blocks as their JSON."""
    if content is None or isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
