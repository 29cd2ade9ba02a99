"""End-to-end throughput against `foxbatch sim` at zero latency, with two hand-written baselines.

In one run, against one simulator process on loopback:
  1. aiohttp baseline: an in-memory submit-and-poll loop over aiohttp, nothing stored;
  2. httpx baseline: the same loop over a plain httpx.AsyncClient (default transport);
  3. foxbatch: `foxbatch run` over the same rows, end to end, every state change durable in SQLite.
Prints tasks/s for each and foxbatch's ratios to the baselines.

    python benchmarks/throughput.py [--rows 3000] [--concurrency 256]
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
    args = parser.parse_args()
    print(describe_machine(["foxbatch", "httpx", "aiohttp", "sqlalchemy",
                            "uvicorn"]))
    with serve_in_subprocess(SimConfig(seed=1)) as url, tempfile.TemporaryDirectory() as tmp:
        n, c = args.rows, args.concurrency
        aio = asyncio.run(aiohttp_loop(url, bodies(n, "aiohttp"), c))
        hx = asyncio.run(httpx_loop(url, bodies(n, "httpx"), c))
        wall, engine = foxbatch_run(url, n, c, Path(tmp))
    print(f"rows {n}, concurrency {c}, simulator at zero latency")
    print(f"aiohttp baseline (in memory):   {n / aio:8.0f} tasks/s  ({aio:.2f} s)")
    print(f"httpx baseline (in memory):     {n / hx:8.0f} tasks/s  ({hx:.2f} s)")
    print(f"foxbatch run, engine (durable): {n / engine:8.0f} tasks/s  ({engine:.2f} s)")
    print(f"foxbatch run, whole command:    {n / wall:8.0f} tasks/s  ({wall:.2f} s incl. "
          "start-up and ingest)")
    print(f"foxbatch engine / aiohttp baseline: {aio / engine:.2f}  (target >= 0.5)")
    print(f"foxbatch engine / httpx baseline:   {hx / engine:.2f}  (target >= 5)")


if __name__ == "__main__":
    main()
