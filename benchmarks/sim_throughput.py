"""How many submit+poll requests per second one `foxbatch sim` process serves over loopback.

Starts `foxbatch sim --port 0 --latency-median 0` as a child process, then drives it from this
process with --in-flight keep-alive connections, each a worker that submits a distinct prompt
and polls its task once, again and again. Stops after --requests requests or --seconds seconds,
whichever comes first, after a short uncounted warm-up. Prints machine information, library
versions, the figure, and the server's CPU time per request (its capacity were it given a whole
core, whatever else runs on the machine).

Two load generators: `raw` (default), a minimal HTTP/1.1 client on asyncio streams, so that
the client costs less than the server it measures; and `aiohttp`, a real client library, which
on 2 cores needs about as much CPU as the server and so shares the machine with it.

    python benchmarks/sim_throughput.py [--client raw|aiohttp] [--requests 60000]
                                        [--seconds 20] [--in-flight 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from foxbatch.sim import SimConfig, serve_in_subprocess  # noqa: E402

API_KEY = "sk-bench"
SUBMIT_PATH = "/v1/llm/generations"
LIBRARIES = ("uvicorn", "uvloop", "httptools", "aiohttp", "httpx")
WARMUP_SECONDS = 1.0
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


class Connection(Protocol):
    """One keep-alive connection that sends a request and returns (status, body)."""

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read its whole response."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


class RawConnection:
    """Just enough HTTP/1.1 for this benchmark, over one asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self._reader, self._writer = reader, writer
        self._prefix = f"Host: {host}\r\nAuthorization: Bearer {API_KEY}\r\n".encode()

    @classmethod
    async def open(cls, host: str, port: int) -> RawConnection:
        """Connect to host:port."""
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read its whole response."""
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._prefix
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self._writer.write(head + b"\r\n" + body)
        response = await self._reader.readuntil(b"\r\n\r\n")
        match = _CONTENT_LENGTH.search(response)
        length = int(match.group(1)) if match else 0
        return int(response[9:12]), await self._reader.readexactly(length)

    async def close(self) -> None:
        """Close the stream."""
        self._writer.close()
        await self._writer.wait_closed()


class AiohttpConnection:
    """A request through a shared aiohttp session (its pool keeps the connections alive)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str):
        self._session, self._base_url = session, base_url

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read its whole response."""
        headers = {"Content-Type": "application/json"} if body else None
        async with self._session.request(method, self._base_url + path, data=body or None,
                                         headers=headers) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        """Nothing to do: the session owns the connections."""


@dataclass
class Tally:
    """Requests done, non-200 answers seen, and requests still allowed."""

    budget: int
    requests: int = 0
    errors: int = 0


async def worker(connection: Connection, number: int, deadline: float, tally: Tally) -> None:
    """Submit then poll, until the deadline or the shared request budget is spent."""
    sequence = 0
    while time.perf_counter() < deadline and tally.budget > 0:
        tally.budget -= 2
        sequence += 1
        body = json.dumps({"model": "gpt-5.4", "prompt": f"worker {number} prompt {sequence}",
                           "max_tokens": 64, "sync": False, "stream": False}).encode()
        status, payload = await connection.request("POST", SUBMIT_PATH, body)
        task_id = json.loads(payload)["id"]
        poll_status, _ = await connection.request("GET", f"/v1/tasks/{task_id}")
        tally.requests += 2
        tally.errors += (status != 200) + (poll_status != 200)


async def drive(client: str, base_url: str, *, requests: int, seconds: float,
                in_flight: int) -> tuple[Tally, float]:
    """Run `in_flight` workers on their own connections; return the tally and elapsed time."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight),
                                    headers={"Authorization": f"Bearer {API_KEY}"})
    async with session:
        if client == "raw":
            connections = [await RawConnection.open(host, int(port)) for _ in range(in_flight)]
        else:
            connections = [AiohttpConnection(session, base_url) for _ in range(in_flight)]
        tally = Tally(budget=requests)
        start = time.perf_counter()
        await asyncio.gather(*(worker(connection, number, start + seconds, tally)
                               for number, connection in enumerate(connections)))
        elapsed = time.perf_counter() - start
        for connection in connections:
            await connection.close()
    return tally, elapsed


def server_cpu_seconds(base_url: str) -> float:
    """CPU seconds the simulator's process has used so far (from GET /_sim/stats)."""
    with urllib.request.urlopen(f"{base_url}/_sim/stats") as response:
        return json.load(response)["process_cpu_seconds"]


def _load_average() -> str:
    """Other work on the machine shares its cores with both processes: say how much there was."""
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop for the load generator when installed (a cheaper client), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def main() -> None:
    """Parse the bounds, serve, warm up, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw")
    parser.add_argument("--requests", type=int, default=60_000, help="at most this many")
    parser.add_argument("--seconds", type=float, default=20.0, help="at most this long")
    parser.add_argument("--in-flight", type=int, default=64, help="concurrent connections")
    args = parser.parse_args()
    print(describe_machine(list(LIBRARIES)))
    print(f"load average before: {_load_average()}")
    bounds = {"requests": args.requests, "in_flight": args.in_flight}
    with serve_in_subprocess(SimConfig(seed=1)) as base_url, \
            asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(drive(args.client, base_url, seconds=WARMUP_SECONDS, **bounds))
        server_before, client_before = server_cpu_seconds(base_url), time.process_time()
        tally, elapsed = runner.run(drive(args.client, base_url, seconds=args.seconds, **bounds))
        client_cpu = time.process_time() - client_before
        server_cpu = server_cpu_seconds(base_url) - server_before
    print(f"load: {args.client} client, {args.in_flight} keep-alive connections, "
          "submit+poll pairs, loopback")
    print(f"requests: {tally.requests} in {elapsed:.2f} s ({tally.errors} errors)")
    print(f"throughput: {tally.requests / elapsed:,.0f} requests/s")
    if tally.requests:
        per_request = server_cpu / tally.requests
        print(f"server CPU: {per_request * 1e6:.0f} us/request "
              f"(capacity on one whole core: {1 / per_request:,.0f} requests/s); "
              f"load generator CPU: {client_cpu / tally.requests * 1e6:.0f} us/request")
    print(f"load average after: {_load_average()}")


if __name__ == "__main__":
    main()
