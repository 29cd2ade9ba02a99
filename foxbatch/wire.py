"""How FoxClient's requests reach FoxAPI: one HTTP exchange in, one `Answer` (read whole) out.

Two wires, one contract:
- `AiohttpWire`, the default for the network: one aiohttp connection pool, called directly.
  foxbatch's hot path is two small JSON requests a task, and per request httpx's Request and
  Response objects cost more CPU than the whole exchange does in aiohttp (URL parsing and
  validation, header normalisation, response streams; `benchmarks/client_overhead.py`: about
  230-260 us a GET through httpx.AsyncClient over the same aiohttp pool against 80-120 us
  through aiohttp). On a machine where foxbatch is bound by its one core, that is the
  difference between about 1,200 and 2,000 tasks/s (benchmarks/RESULTS.md).
- `HttpxWire`: an httpx.AsyncClient over any httpx transport: `httpx.ASGITransport` for the
  simulator in-process (`--sim`, fast tests) or any transport a caller passes in.

Neither translates its library's exceptions: FoxClient classifies them itself, and must see
them as they are to tell a request that never left from one that may have reached the server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx
import orjson


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, its body read whole and decoded (Content-Encoding)."""

    status: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive, as both libraries give them
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (orjson, or the standard library for what orjson refuses:
        NaN and infinities, read as NonFiniteFloat); ValueError when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return json.loads(self.body, parse_constant=NonFiniteFloat)


class NonFiniteFloat(float):
    """A NaN or an infinity read from an answer. orjson refuses to write this float subclass
    (it would write the value itself as null), so whoever writes it back out falls back to
    the standard library, which keeps it as it came."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait: for a connection to open, for each read, for a free pooled
    connection (waiting for one, DNS and connecting, in all)."""

    connect: float
    read: float
    pool: float


class Wire(Protocol):
    """Sends one request and reads its answer whole."""

    async def send(self, method: str, url: str, body: bytes | None) -> Answer:
        """`method` `url` (absolute) with `body`, and the wire's headers."""

    async def aclose(self) -> None:
        """Close the connections."""


class AiohttpWire:
    """Requests through one aiohttp ClientSession (created on first use, in the running event
    loop) with at most `max_connections` connections."""

    def __init__(self, headers: Mapping[str, str], timeouts: Timeouts, max_connections: int,
                 keepalive_expiry: float = 30.0):
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(sock_connect=timeouts.connect,
                                              sock_read=timeouts.read, connect=timeouts.pool)
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    async def send(self, method: str, url: str, body: bytes | None) -> Answer:
        """One request over the pool; aiohttp's exceptions pass through as they are."""
        session = self._session or self._open()
        async with session.request(method, url, data=body, allow_redirects=False) as answer:
            content = await answer.read()
            return Answer(answer.status, answer.reason or "", answer.headers, content)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        # httpx's TLS context (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR): the trust
        # store httpx users expect. No cookie jar: FoxAPI sets no cookies and none are sent.
        connector = aiohttp.TCPConnector(limit=self._max_connections,
                                         keepalive_timeout=self._keepalive_expiry,
                                         ssl=httpx.create_ssl_context())
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers,
                                              timeout=self._timeout,
                                              cookie_jar=aiohttp.DummyCookieJar())
        return self._session


class HttpxWire:
    """Requests through an httpx.AsyncClient over `transport` that keeps no cookies."""

    def __init__(self, transport: httpx.AsyncBaseTransport, headers: Mapping[str, str],
                 timeouts: Timeouts):
        self._client = _CookielessClient(
            headers=dict(headers), transport=transport,
            timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.pool))
        # What build_request would merge into every request, merged once.
        self._request_headers = self._client.headers
        self._extensions = {"timeout": self._client.timeout.as_dict()}

    async def send(self, method: str, url: str, body: bytes | None) -> Answer:
        """One request through the client; httpx's exceptions pass through as they are."""
        request = httpx.Request(method, url, headers=self._request_headers, content=body,
                                extensions=self._extensions)
        response = await self._client.send(request)
        return Answer(response.status_code, response.reason_phrase, response.headers,
                      response.content)

    async def aclose(self) -> None:
        """Close the client and its transport."""
        await self._client.aclose()


class _NoCookies(httpx.Cookies):
    """Cookies that are never taken from a response: FoxAPI sets none, and looking for them
    costs httpx a urllib request and a message of the response's headers every time."""

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
        raise TypeError("foxbatch's HTTP client keeps no cookies")


_NO_COOKIES = _NoCookies()
