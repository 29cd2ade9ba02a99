"""End-to-end throughput against `foxbatch sim` at zero latency, with two hand-written baselines.

In one run, against one simulator process on loopback:
  1. aiohttp baseline: an in-memory submit-and-poll loop over aiohttp, nothing stored, at
     `--concurrency` and at each of `--baseline-concurrencies` (its best is the strictest
     yardstick: it does better with fewer requests in flight);
  2. httpx baseline: the same loop over a plain httpx.AsyncClient (default transport);
  3. foxbatch: `foxbatch run` over the same rows, end to end, every state change durable in
     SQLite, at `--concurrency`.
Prints tasks/s for each and foxbatch's ratios to the baselines.

    python benchmarks/throughput.py [--rows 3000] [--concurrency 256]
                                    [--baseline-concurrencies 32,64,128] [--skip-httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from foxbatch.sim import SimConfig  # noqa: E402
from foxbatch.sim.server import serve_in_subprocess  # noqa: E402

HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}


def bodies(rows: int, tag: str) -> list[bytes]:
    """Distinct request bodies (a per-run tag keeps runs apart in the simulator's counts)."""
    return [json.dumps({"model": "gpt-5.4", "prompt": f"{tag} row {i}", "max_tokens": 32,
                        "sync": False, "stream": False}).encode() for i in range(rows)]


async def aiohttp_loop(url: str, payloads: list[bytes], concurrency: int) -> float:
    """Submit and poll every payload over aiohttp; return seconds taken."""
    queue = list(payloads)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(f"{url}/v1/llm/generations", data=body) as r:
                    task_id = (await r.json())["id"]
                while True:
                    async with session.get(f"{url}/v1/tasks/{task_id}") as r:
                        if (await r.json())["status"] in ("completed", "failed"):
                            break
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def httpx_loop(url: str, payloads: list[bytes], concurrency: int) -> float:
    """The same loop over a plain httpx.AsyncClient; return seconds taken."""
    queue = list(payloads)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as client:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                task_id = (await client.post("/v1/llm/generations", content=body)).json()["id"]
                while (await client.get(f"/v1/tasks/{task_id}")).json()["status"] not in (
                        "completed", "failed"):
                    pass
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


def foxbatch_run(url: str, rows: int, concurrency: int, workdir: Path) -> tuple[float, float]:
    """Run `foxbatch run` as a user would; return (wall seconds, engine seconds)."""
    source = workdir / "bench.jsonl"
    with source.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"id": i, "prompt": f"foxbatch row {i}"}) + "\n")
    env = {**os.environ, "FOXAPI_API_KEY": "sk-bench", "FOXAPI_BASE_URL": url}
    command = [sys.executable, "-m", "foxbatch", "--db", f"sqlite:///{workdir / 'bench.db'}",
               "run", str(source), "--model", "gpt-5.4", "--max-tokens", "32",
               "--concurrency", str(concurrency)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"foxbatch run failed ({done.returncode}): {done.stderr}")
    engine = float(re.search(r"\((\d+\.\d+)s;", done.stderr).group(1))
    return wall, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--baseline-concurrencies", default="32,64,128",
                        help="more in-flight caps to run the aiohttp baseline at")
    parser.add_argument("--skip-httpx", action="store_true",
                        help="leave out the plain httpx loop (a minute at 3,000 rows)")
    args = parser.parse_args()
    print(describe_machine(["foxbatch", "httpx", "aiohttp", "sqlalchemy",
                            "uvicorn"]))
    n, c = args.rows, args.concurrency
    others = [int(x) for x in args.baseline_concurrencies.split(",") if x and int(x) != c]
    with serve_in_subprocess(SimConfig(seed=1)) as url, tempfile.TemporaryDirectory() as tmp:
        aio = {cap: asyncio.run(aiohttp_loop(url, bodies(n, f"aiohttp-{cap}"), cap))
               for cap in (c, *others)}
        hx = None if args.skip_httpx else asyncio.run(httpx_loop(url, bodies(n, "httpx"), c))
        wall, engine = foxbatch_run(url, n, c, Path(tmp))
    print(f"rows {n}, simulator at zero latency")
    for cap, seconds in aio.items():
        print(f"aiohttp baseline (in memory), {cap:3d} in flight: {n / seconds:8.0f} tasks/s  "
              f"({seconds:.2f} s)")
    if hx is not None:
        print(f"httpx baseline (in memory), {c:3d} in flight:   {n / hx:8.0f} tasks/s  "
              f"({hx:.2f} s)")
    print(f"foxbatch run, engine (durable), {c:3d} in flight: {n / engine:6.0f} tasks/s  "
          f"({engine:.2f} s)")
    print(f"foxbatch run, whole command:    {n / wall:8.0f} tasks/s  ({wall:.2f} s incl. "
          "start-up and ingest)")
    best = min(aio.values())
    print(f"foxbatch engine / aiohttp baseline at {c} in flight: {aio[c] / engine:.2f}  "
          "(target >= 0.5)")
    print(f"foxbatch engine / aiohttp baseline at its best ({min(aio, key=aio.get)} in flight): "
          f"{best / engine:.2f}")
    if hx is not None:
        print(f"foxbatch engine / httpx baseline:   {hx / engine:.2f}  (target >= 5)")


if __name__ == "__main__":
    main()
