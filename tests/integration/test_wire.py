"""Both of foxbatch's wires (aiohttp's pool, an httpx client) against a real server on loopback."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import aiohttp
import httpx
import pytest
from aiohttp import web

from foxbatch.client import FoxClient
from foxbatch.errors import InDoubtError
from foxbatch.wire import AiohttpWire, HttpxWire, Timeouts, Wire


@pytest.fixture
async def server():
    """A small aiohttp server: echoes what it received, or answers gzip-compressed JSON."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "body": await request.text(),
                                  "headers": dict(request.headers),
                                  "peer": request.transport.get_extra_info("peername")[1]},
                                 status=201)

    async def compressed(_request: web.Request) -> web.Response:
        body = gzip.compress(json.dumps({"ok": True}).encode())
        return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "application/json"})

    async def with_cookie(_request: web.Request) -> web.Response:
        response = web.json_response({"ok": True})
        response.set_cookie("session", "abc")
        return response

    async def garbled(_request: web.Request) -> web.Response:
        return web.Response(body=b"<html>502 Bad Gateway</html>",
                            headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/gzip", compressed)
    app.router.add_get("/cookie", with_cookie)
    app.router.add_post("/v1/llm/generations", garbled)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


TIMEOUTS = Timeouts(connect=5.0, read=5.0, pool=5.0)
HEADERS = {"Authorization": "Bearer sk-x", "Accept": "application/json"}


def aiohttp_wire(connections: int) -> Wire:
    """The default wire: aiohttp's pool, called directly."""
    return AiohttpWire(HEADERS, TIMEOUTS, connections)


def httpx_wire(connections: int) -> Wire:
    """An httpx client over httpx's own transport."""
    limits = httpx.Limits(max_connections=connections)
    return HttpxWire(httpx.AsyncHTTPTransport(limits=limits), HEADERS, TIMEOUTS)


WIRES = pytest.mark.parametrize("make_wire", [aiohttp_wire, httpx_wire],
                                ids=["aiohttp", "httpx"])


@WIRES
async def test_requests_carry_method_body_and_headers(server, make_wire: Callable[[int], Wire]):
    wire = make_wire(4)
    answer = await wire.send("POST", f"{server}/echo", b'{"a": 1}')
    await wire.aclose()
    seen = answer.json()
    assert answer.status == 201
    assert (seen["method"], seen["body"]) == ("POST", '{"a": 1}')
    assert seen["headers"]["Authorization"] == "Bearer sk-x"
    assert answer.headers["content-type"].startswith("application/json")  # any case


@WIRES
async def test_a_compressed_answer_is_decoded_once(server, make_wire: Callable[[int], Wire]):
    wire = make_wire(4)
    answer = await wire.send("GET", f"{server}/gzip", None)
    await wire.aclose()
    assert answer.json() == {"ok": True}


@WIRES
async def test_connections_are_kept_and_reused(server, make_wire: Callable[[int], Wire]):
    wire = make_wire(2)
    ports = {(await wire.send("GET", f"{server}/echo", None)).json()["peer"] for _ in range(20)}
    await wire.aclose()
    assert len(ports) == 1  # one after the other: one connection, kept alive


async def test_the_aiohttp_pool_is_closed_with_the_wire(server):
    wire = AiohttpWire(HEADERS, TIMEOUTS, 2)
    await wire.send("GET", f"{server}/echo", None)
    await wire.aclose()
    assert wire._session is None


async def test_a_refused_connection_raises_aiohttps_own_error():
    """Not translated: FoxClient tells 'never connected' from 'maybe sent' by it."""
    wire = AiohttpWire(HEADERS, TIMEOUTS, 1)
    with pytest.raises(aiohttp.ClientConnectorError):
        await wire.send("GET", "http://127.0.0.1:1/", None)
    await wire.aclose()


@WIRES
async def test_the_wire_keeps_and_sends_no_cookie(server, make_wire: Callable[[int], Wire]):
    wire = make_wire(2)
    await wire.send("GET", f"{server}/cookie", None)
    echo = await wire.send("GET", f"{server}/echo", None)
    await wire.aclose()
    assert "Cookie" not in echo.json()["headers"]


@pytest.mark.parametrize("transport", [None, httpx.AsyncHTTPTransport()], ids=["aiohttp", "httpx"])
async def test_an_answer_that_cannot_be_decoded_leaves_the_submit_in_doubt(server, transport):
    """A gzip answer that is not gzip (say, a proxy's error page): an answer came, so the
    task may exist."""
    async with FoxClient(server, "sk-x", transport=transport) as client:
        with pytest.raises(InDoubtError, match="could not be read"):
            await client.submit('{"model": "gpt-5.4", "prompt": "x"}')
