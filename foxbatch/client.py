"""FoxAPI over httpx.AsyncClient: submit a task, read a task, classify every failure.

The classification follows foxapi.md §4 and the crash rules of design.md. What matters most is
telling apart a submit that *proves* no task was created (connection refused, any 4xx) from one
that *may* have created a billed task (timeout or reset after sending, 5xx): the first raises
NotSentError or a 4xx error, the second InDoubtError.

The transport is injectable (httpx.ASGITransport for in-process tests against the simulator).
By default requests go through aiohttp (foxbatch.transport): httpx's own pool degrades badly
with hundreds of requests in flight, aiohttp's does not. FoxAPI sets no cookies, so responses
are not searched for them (see _NoCookies).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx
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
from foxbatch.transport import AiohttpTransport

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
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._submit_url = httpx.URL(self.base_url + SUBMIT_PATH)
        self._http = _CookielessClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport or default_transport(max_connections),
        )
        # What build_request would merge into every request, merged once.
        self._headers = self._http.headers
        self._extensions = {"timeout": self._http.timeout.as_dict()}

    async def __aenter__(self) -> FoxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def submit(self, body_json: str) -> str:
        """POST one request body (canonical JSON text); return the new task id.

        Raises NotSentError / 4xx errors when no task can exist, InDoubtError when one may.
        """
        response = await self._send("POST", self._submit_url, content=body_json.encode("utf-8"))
        if response.status_code >= 500:
            raise InDoubtError(f"submit answered HTTP {response.status_code}: "
                               f"{_error_message(response)}", status=response.status_code,
                               code=_error_code(response))
        _raise_for_error(response)
        try:
            task_id = response.json()["id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InDoubtError("submit answered 200 without a readable task id",
                               status=response.status_code) from exc
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
        response = await self._send("GET", httpx.URL(self.base_url + TASK_PATH.format(
            task_id=quote(task_id, safe=""))))
        if response.status_code == 404:
            raise TaskNotFoundError(f"task {task_id} not found", status=404,
                                    code=_error_code(response))
        if response.status_code >= 500:
            raise TransientApiError(f"poll answered HTTP {response.status_code}: "
                                    f"{_error_message(response)}", status=response.status_code)
        _raise_for_error(response)
        return parse_task(_json_body(response), task_id)

    async def list_models(self) -> list[str]:
        """The model ids this key may use."""
        response = await self._send("GET", httpx.URL(self.base_url + MODELS_PATH))
        if response.status_code >= 500:
            raise TransientApiError(f"model list answered HTTP {response.status_code}",
                                    status=response.status_code)
        _raise_for_error(response)
        return [m["id"] for m in _json_body(response).get("data", []) if "id" in m]

    async def _send(self, method: str, url: httpx.URL, *, content: bytes | None = None
                    ) -> httpx.Response:
        # Absolute, pre-parsed URLs and the client's headers merged once: building a request
        # from a path with AsyncClient.request costs httpx several times more.
        request = httpx.Request(method, url, headers=self._headers, content=content,
                                extensions=self._extensions)
        try:
            response = await self._http.send(request)
        except (httpx.TransportError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise classify_transport_error(exc, method) from exc
        except httpx.DecodingError as exc:  # an answer came, unreadable (a proxy's page?)
            raise InDoubtError(f"{method} got an answer that could not be decoded "
                               f"({exc})") from exc
        return response


class _NoCookies(httpx.Cookies):
    """Cookies that are never taken from a response: FoxAPI sets none, and looking for them
    costs httpx a urllib request and a message of the response's headers every time (about
    8% of the engine's CPU)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Take no cookie."""


class _CookielessClient(httpx.AsyncClient):
    """An httpx.AsyncClient whose cookie jar stays empty (see _NoCookies)."""

    @property
    def cookies(self) -> httpx.Cookies:
        """No cookies, ever."""
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("FoxClient's HTTP client keeps no cookies")


_NO_COOKIES = _NoCookies()


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """The aiohttp-backed transport with a pool sized for `max_connections` in flight."""
    return AiohttpTransport(max_connections)


def classify_transport_error(exc: BaseException, method: str) -> TransportError:
    """NotSentError if the request cannot have reached the server, else InDoubtError."""
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if _never_connected(exc):
        return NotSentError(f"{method} could not connect ({detail})")
    return InDoubtError(f"{method} got no answer ({detail})")


def _never_connected(exc: BaseException) -> bool:
    # The default transport lets aiohttp's exceptions through as they are; an httpx error
    # may carry one as its cause (httpx-aiohttp made every one of them a ConnectTimeout).
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return isinstance(exc, ConnectionRefusedError)


def _raise_for_error(response: httpx.Response) -> None:
    status = response.status_code
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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_code(response: httpx.Response) -> str | None:
    code = _error_body(response).get("code")
    return str(code) if code else None


def _error_message(response: httpx.Response) -> str:
    message = _error_body(response).get("message")
    return str(message) if message else (response.reason_phrase or "no message")


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise TransientApiError(f"unreadable JSON in HTTP {response.status_code} answer",
                                status=response.status_code) from exc
    if not isinstance(body, dict):
        raise TransientApiError("answer is not a JSON object", status=response.status_code)
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
        "result_json": json.dumps(result, ensure_ascii=False, separators=(",", ":")),
    }


def _text(content: object) -> str | None:
    """Message content as text: a string as is, content blocks as their JSON."""
    if content is None or isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
