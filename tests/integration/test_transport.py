"""foxbatch's aiohttp-backed httpx transport against a real HTTP server on loopback."""

from __future__ import annotations

import gzip
import json

import aiohttp
import httpx
import pytest
from aiohttp import web

from foxbatch.client import FoxClient
from foxbatch.errors import InDoubtError
from foxbatch.transport import AiohttpTransport


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


async def test_requests_carry_method_body_and_headers(server):
    async with httpx.AsyncClient(transport=AiohttpTransport(4)) as client:
        response = await client.post(f"{server}/echo", content=b'{"a": 1}',
                                     headers={"Authorization": "Bearer sk-x"})
    seen = response.json()
    assert response.status_code == 201
    assert (seen["method"], seen["body"]) == ("POST", '{"a": 1}')
    assert seen["headers"]["Authorization"] == "Bearer sk-x"


async def test_a_compressed_answer_is_decoded_once(server):
    async with httpx.AsyncClient(transport=AiohttpTransport(4)) as client:
        response = await client.get(f"{server}/gzip")
    assert response.json() == {"ok": True}


async def test_connections_are_kept_and_reused(server):
    transport = AiohttpTransport(2)
    async with httpx.AsyncClient(transport=transport) as client:
        ports = {(await client.get(f"{server}/echo")).json()["peer"] for _ in range(20)}
    assert len(ports) == 1  # one after the other: one connection, kept alive
    assert transport._session is None  # closed with the client


async def test_a_refused_connection_raises_aiohttps_own_error():
    """Not translated: FoxClient tells 'never connected' from 'maybe sent' by it."""
    async with httpx.AsyncClient(transport=AiohttpTransport(1)) as client:
        with pytest.raises(aiohttp.ClientConnectorError):
            await client.get("http://127.0.0.1:1/")


async def test_the_transport_keeps_and_sends_no_cookie(server):
    transport = AiohttpTransport(2)
    await transport.handle_async_request(httpx.Request("GET", f"{server}/cookie"))
    echo = await transport.handle_async_request(httpx.Request("GET", f"{server}/echo"))
    await transport.aclose()
    assert "Cookie" not in json.loads(echo.content)["headers"]


async def test_an_answer_that_cannot_be_decoded_leaves_the_submit_in_doubt(server):
    """A gzip answer that is not gzip (say, a proxy's error page): an answer came, so the
    task may exist."""
    async with FoxClient(server, "sk-x") as client:
        with pytest.raises(InDoubtError, match="could not be decoded"):
            await client.submit('{"model": "gpt-5.4", "prompt": "x"}')
