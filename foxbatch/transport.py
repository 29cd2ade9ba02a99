"""An httpx transport over an aiohttp connection pool, lean enough for thousands of requests/s.

httpx's own pool degrades badly with hundreds of requests in flight (benchmarks/RESULTS.md);
aiohttp's does not. The httpx-aiohttp package bridges the two, but per request it hands httpx's
Headers to aiohttp as a mapping (every lookup re-decodes every header) and streams the body
through three async iterators. FoxAPI's answers are small JSON documents, so this transport
passes the headers as plain pairs and reads each body whole: about a third less CPU a request
(measured with benchmarks/throughput.py).

aiohttp's exceptions are not translated: FoxClient classifies them itself, and must see them as
they are to tell a request that never left from one that may have reached the server.
"""

from __future__ import annotations

import aiohttp
import httpx

_HTTP_11 = {"http_version": b"HTTP/1.1"}


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one aiohttp ClientSession (created on first use, in the
    running event loop) with at most `max_connections` connections."""

    def __init__(self, max_connections: int, keepalive_expiry: float = 30.0):
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and read its answer whole."""
        session = self._session or self._open()
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in request.headers.raw]
        async with session.request(
                request.method, str(request.url), headers=headers,
                data=request.content or None, allow_redirects=False, auto_decompress=False,
                timeout=self._timeout(request.extensions.get("timeout", {}))) as answer:
            # Still encoded as sent: httpx decodes it by its Content-Encoding when read.
            body = await answer.read()
            return httpx.Response(answer.status, headers=answer.raw_headers, content=body,
                                  request=request, extensions=_HTTP_11)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        # httpx's TLS context (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), as with
        # httpx's own transports; no cookie jar: FoxAPI sets no cookies and none are sent.
        connector = aiohttp.TCPConnector(limit=self._max_connections,
                                         keepalive_timeout=self._keepalive_expiry,
                                         ssl=httpx.create_ssl_context())
        self._session = aiohttp.ClientSession(connector=connector,
                                              cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    @staticmethod
    def _timeout(timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's per-request timeouts as aiohttp's: connect -> sock_connect, read ->
        sock_read, pool -> connect (waiting for a pooled connection, DNS and connecting).
        httpx's write timeout has no aiohttp counterpart and is not applied."""
        return aiohttp.ClientTimeout(sock_connect=timeouts.get("connect"),
                                     sock_read=timeouts.get("read"),
                                     connect=timeouts.get("pool"))
