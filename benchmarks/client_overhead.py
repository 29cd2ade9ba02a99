"""What a GET costs through FoxClient against the same GET through a bare aiohttp session, in
the same run, against one simulator; and through FoxClient over an httpx.AsyncClient.

    python benchmarks/client_overhead.py [--requests 6000] [--concurrency 64] [--rounds 2]

Each polls one task over and over with `--concurrency` requests in flight, over one connection
pool of that size, on uvloop as the CLI runs (where installed), against a `foxbatch sim`
subprocess at zero latency on loopback:
  1. a bare aiohttp session (the body parsed as JSON);
  2. FoxClient as foxbatch runs it: its default wire, aiohttp's pool called directly;
  3. FoxClient over an httpx.AsyncClient with httpx's own transport (foxbatch.wire.HttpxWire,
     what any httpx transport passed to FoxClient goes through).
Prints requests/s and this process's CPU microseconds per request (user + system) for each,
and the ratio of 1 to 2: the share of the end-to-end throughput target (issue 5) that the
HTTP client alone leaves, before anything is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_seconds, describe_machine  # noqa: E402

from foxbatch.client import FoxClient  # noqa: E402
from foxbatch.sim import SimConfig  # noqa: E402
from foxbatch.sim.server import serve_in_subprocess  # noqa: E402

API_KEY = "sk-bench"
BODY = json.dumps({"model": "gpt-5.4", "prompt": "overhead", "max_tokens": 32, "sync": False,
                   "stream": False})


async def timed(requests: int, concurrency: int,
                get: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Run `requests` calls of `get`, `concurrency` at a time; return (wall s, CPU s)."""
    async def worker(count: int) -> None:
        for _ in range(count):
            await get()

    cpu, start = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return time.perf_counter() - start, cpu_seconds() - cpu


async def bare_aiohttp(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """GETs through an aiohttp session, the body parsed as JSON."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async with session.post(f"{url}/v1/llm/generations", data=BODY) as response:
            task_url = f"{url}/v1/tasks/{(await response.json())['id']}"

        async def get() -> object:
            async with session.get(task_url) as answer:
                return await answer.json()

        return await timed(requests, concurrency, get)


async def fox_client(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """GETs through FoxClient.get_task (parsed into a TaskView)."""
    async with FoxClient(url, API_KEY, max_connections=concurrency) as client:
        task_id = await client.submit(BODY)
        return await timed(requests, concurrency, lambda: client.get_task(task_id))


async def fox_client_over_httpx(url: str, requests: int, concurrency: int
                                ) -> tuple[float, float]:
    """The same through an httpx.AsyncClient (httpx's transport, a pool of that size)."""
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=concurrency))
    async with FoxClient(url, API_KEY, transport=transport) as client:
        task_id = await client.submit(BODY)
        return await timed(requests, concurrency, lambda: client.get_task(task_id))


def run(coroutine: Coroutine[Any, Any, tuple[float, float]]) -> tuple[float, float]:
    """Run `coroutine` on uvloop where installed, as the CLI does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main() -> None:
    """Measure the clients `--rounds` times, alternating, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(describe_machine(["foxbatch", "httpx", "aiohttp"]))
    clients = {"aiohttp session": bare_aiohttp, "FoxClient": fox_client,
               "FoxClient over httpx": fox_client_over_httpx}
    best: dict[str, float] = {}
    with serve_in_subprocess(SimConfig(seed=1)) as url:
        for _ in range(args.rounds):
            for name, measure in clients.items():
                wall, cpu = run(measure(url, args.requests, args.concurrency))
                per_request = cpu / args.requests * 1e6
                best[name] = min(best.get(name, per_request), per_request)
                print(f"{name:<20} {args.requests / wall:7.0f} requests/s  "
                      f"{per_request:6.0f} us CPU a request")
    ratio = best["aiohttp session"] / best["FoxClient"]
    print(f"FoxClient costs {1 / ratio:.1f}x a bare aiohttp GET: an engine bound by its HTTP "
          f"client alone would reach about {ratio:.2f} of an aiohttp loop's tasks/s")


if __name__ == "__main__":
    main()
