"""The FoxAPI client's classification of every answer, in-process and over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest

from foxbatch.client import FoxClient
from foxbatch.errors import (
    AuthenticationError,
    InDoubtError,
    NotSentError,
    QuotaError,
    RateLimitedError,
    RequestRejectedError,
    TaskNotFoundError,
    TransientApiError,
)
from foxbatch.models import RequestSpec
from foxbatch.sim import SimConfig, Simulator, expected_completion
from foxbatch.sim.server import serve_in_thread

BODY = RequestSpec(model="gpt-5.4", prompt="hello", max_tokens=32).canonical_json()


@pytest.fixture(params=["in-process", "http"])
def connect(request) -> Iterator:
    """Build a client for a simulator config: in-process (ASGITransport) or over loopback."""

    @asynccontextmanager
    async def make(config: SimConfig, key: str = "sk-test") -> AsyncIterator[FoxClient]:
        sim = Simulator(config)
        if request.param == "in-process":
            transport = httpx.ASGITransport(app=sim.app)
            async with FoxClient("http://sim", key, transport=transport) as client:
                yield client
        else:
            with serve_in_thread(sim) as url:
                async with FoxClient(url, key) as client:
                    yield client

    return make


async def test_submit_then_poll_returns_the_completion(connect):
    async with connect(SimConfig(seed=1)) as client:
        task_id = await client.submit(BODY)
        view = await client.get_task(task_id)
    assert view.status == "completed"
    assert view.result["choices"][0]["message"]["content"] == expected_completion(
        RequestSpec(model="gpt-5.4", prompt="hello", max_tokens=32).to_body())


@pytest.mark.parametrize(("config", "key", "error"), [
    (SimConfig(api_key="sk-right"), "sk-wrong", AuthenticationError),
    (SimConfig(quota=0), "sk-test", QuotaError),
    (SimConfig(p429=1.0, retry_after=7), "sk-test", RateLimitedError),
    (SimConfig(models=("claude-opus-4-7",)), "sk-test", RequestRejectedError),
    (SimConfig(p5xx_submit_after=1.0), "sk-test", InDoubtError),
    (SimConfig(p5xx_submit_before=1.0), "sk-test", InDoubtError),
    (SimConfig(pdrop_submit=1.0), "sk-test", InDoubtError),
])
async def test_submit_errors_are_classified(connect, config, key, error):
    async with connect(config, key) as client:
        with pytest.raises(error) as caught:
            await client.submit(BODY)
    if error is RateLimitedError:
        assert caught.value.retry_after == 7
    if error is RequestRejectedError:
        assert caught.value.code == "model_not_supported"


async def test_unknown_task_is_not_found(connect):
    async with connect(SimConfig()) as client:
        with pytest.raises(TaskNotFoundError):
            await client.get_task("task-llmrouter-1-nosuchid")


async def test_poll_5xx_is_retried_in_call_then_raised(connect):
    async with connect(SimConfig(p5xx_get=1.0)) as client:
        with pytest.raises(TransientApiError):
            await client.get_task("task-llmrouter-1-whatever")


async def test_model_list(connect):
    async with connect(SimConfig(models=("gpt-5.4", "kimi-k2.6"))) as client:
        assert await client.list_models() == ["gpt-5.4", "kimi-k2.6"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_connection_refused_proves_nothing_was_sent(transport):
    url = f"http://127.0.0.1:{_closed_port()}"
    chosen = httpx.AsyncHTTPTransport() if transport == "httpx" else None
    async with FoxClient(url, "sk-test", transport=chosen) as client:
        with pytest.raises(NotSentError):
            await client.submit(BODY)


async def test_the_api_key_never_appears_in_errors():
    sim = Simulator(SimConfig(api_key="sk-right"))
    transport = httpx.ASGITransport(app=sim.app)
    async with FoxClient("http://sim", "sk-secret-value", transport=transport) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.submit(BODY)
    assert "sk-secret-value" not in str(caught.value)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_connection_dropped_after_the_submit_was_sent_is_in_doubt(transport):
    """Over real HTTP, the simulator creates the task and then closes the connection without
    an answer: the client cannot know, so the submit is in doubt, not 'not sent'."""
    sim = Simulator(SimConfig(pdrop_submit=1.0))
    chosen = httpx.AsyncHTTPTransport() if transport == "httpx" else None
    with serve_in_thread(sim) as url:
        async with FoxClient(url, "sk-test", transport=chosen) as client:
            with pytest.raises(InDoubtError):
                await client.submit(BODY)
    assert sim.stats()["tasks_created"] == 1
