"""Scale-out on PostgreSQL: tasks/s of 1 against 2 `foxbatch poll` workers, and how closely
3 workers sharing one --rps budget keep to it.

throughput: one job of --rows rows in a fresh PostgreSQL database, served by 1, then 2 workers
(`foxbatch poll --until-done`, --concurrency each) against one `foxbatch sim` with a realistic
task latency (--latency-median, lognormal sigma 0.5), so that polling matters. tasks/s is rows
over the span from the first submit to the last result, both read from the store.

rate: 3 workers with --rps R against `foxbatch sim` at zero latency and no limit of its own,
once sharing the budget (one API key: the default) and once not (a key each, three budgets);
the simulator's request counter is sampled every 0.25 s. Shown: the aggregate rate, the busiest
1 s and 5 s, and how many budget leases the store served.

    python benchmarks/scale_out.py [--mode throughput|rate|both] [--rows 6000]
        [--concurrency 64] [--latency-median 1.0] [--rps 100] [--rate-rows 1000]
        [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from foxbatch.models import RequestSpec, request_hash  # noqa: E402
from foxbatch.sim import SimConfig, serve_in_subprocess  # noqa: E402
from foxbatch.store import open_store  # noqa: E402
from foxbatch.store.records import NewItem  # noqa: E402

JOB = "bench"


@contextlib.contextmanager
def scratch_database(admin: str) -> Iterator[str]:
    """A new PostgreSQL database for one run (a SQLAlchemy URL), dropped afterwards."""
    name = f"foxbatch_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(url: str, rows: int) -> None:
    """One job of `rows` distinct prompts, all queued."""
    repo = open_store(url)
    job = repo.ensure_job(JOB)
    items = []
    for i in range(1, rows + 1):
        body = RequestSpec(model="gpt-5.4", prompt=f"bench row {i}", max_tokens=32).canonical_json()
        items.append(NewItem(str(i), i, json.dumps({"id": i}), body, request_hash(body), "gpt-5.4"))
    repo.add_items(job.id, items)
    repo.engine.dispose()


def run_workers(url: str, base_url: str, keys: list[str], *args: str) -> float:
    """Run one `foxbatch poll --until-done` per key until all exit; return wall seconds."""
    start = time.monotonic()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "foxbatch", "--db", url, "poll", "--job", JOB, "--until-done",
         *args], env={**os.environ, "FOXAPI_BASE_URL": base_url, "FOXAPI_API_KEY": key},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for key in keys]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return time.monotonic() - start


def cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [float(v) for v in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def children_cpu() -> float:
    """CPU seconds used by this process's finished children (the workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def engine_span(url: str) -> tuple[int, float]:
    """(succeeded rows, seconds from the first submit to the last result), from the store."""
    repo = open_store(url)
    job = repo.get_job(JOB)
    done = [(i["submitted_at"], i["finished_at"]) for i in repo.iter_items(job.id)
            if i["status"] == "succeeded"]
    repo.engine.dispose()
    return len(done), max(f for _, f in done) - min(s for s, _ in done)


def throughput(args: argparse.Namespace) -> None:
    print(f"\nthroughput: {args.rows} rows, --concurrency {args.concurrency} per worker, "
          f"simulator latency median {args.latency_median:g} s (sigma 0.5), PostgreSQL")
    config = SimConfig(seed=1, latency_median=args.latency_median, latency_sigma=0.5)
    results = {}
    for workers in (1, 2):
        with scratch_database(args.pg) as url, serve_in_subprocess(config) as base_url:
            seed(url, args.rows)
            busy0, total0 = cpu_times()
            worker_cpu0 = children_cpu()
            wall = run_workers(url, base_url, ["sk-bench"] * workers,
                               "--concurrency", str(args.concurrency))
            busy1, total1 = cpu_times()
            worker_cpu = children_cpu() - worker_cpu0
            rows, span = engine_span(url)
            stats = httpx.get(f"{base_url}/_sim/stats").json()
        results[workers] = rows / span
        print(f"  {workers} worker(s): {rows / span:7.1f} tasks/s  ({rows} rows in {span:.1f} s; "
              f"wall {wall:.1f} s incl. start-up; {stats['polls'] / stats['tasks_created']:.2f} "
              f"polls/task)")
        print(f"      CPU: workers {1e3 * worker_cpu / rows:.2f} ms/task, simulator "
              f"{stats['process_cpu_seconds']:.1f} s, machine busy "
              f"{100 * (busy1 - busy0) / (total1 - total0):.0f}% of {os.cpu_count()} cores "
              "during the run (start-up included)")
    print(f"  2 workers / 1 worker: {results[2] / results[1]:.2f}x")


def sample(base_url: str, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    with httpx.Client(base_url=base_url) as client:
        while not stop.is_set():
            stats = client.get("/_sim/stats").json()
            out.append((time.monotonic(), stats["submits"] + stats["polls"]))
            stop.wait(0.25)


def busiest(samples: list[tuple[float, int]], seconds: float) -> float:
    """The highest request rate over any stretch of at least `seconds` between two samples."""
    return max(((n1 - n0) / (t1 - t0) for i, (t0, n0) in enumerate(samples)
                for t1, n1 in samples[i + 1:] if t1 - t0 >= seconds), default=0.0)


def budget_leases(url: str) -> int:
    """UPDATEs of rate_budgets (one per lease), from PostgreSQL's statistics."""
    time.sleep(1.0)  # statistics reach pg_stat_user_tables within a second or so
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT n_tup_upd FROM pg_stat_user_tables "
                           "WHERE relname = 'rate_budgets'").fetchone()
    return int(row[0]) if row else 0


def rate(args: argparse.Namespace) -> None:
    print(f"\nrate: 3 workers, --rps {args.rps:g} each, {args.rate_rows} rows, simulator at zero "
          "latency with no rate limit of its own, PostgreSQL")
    for label, keys in (("one API key (shared budget)", ["sk-bench"] * 3),
                        ("three API keys (a budget each)", ["sk-a", "sk-b", "sk-c"])):
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        with scratch_database(args.pg) as url, serve_in_subprocess(SimConfig(seed=2)) as base:
            seed(url, args.rate_rows)
            sampler = threading.Thread(target=sample, args=(base, stop, samples))
            sampler.start()
            try:
                run_workers(url, base, keys, "--rps", str(args.rps))
            finally:
                stop.set()
                sampler.join()
            leases = budget_leases(url)
        busy = [s for s, nxt in zip(samples, samples[1:], strict=False) if nxt[1] > s[1]]
        (t0, n0), (t1, n1) = busy[0], busy[-1]
        print(f"  {label}: {(n1 - n0) / (t1 - t0):6.1f} requests/s over {t1 - t0:.1f} s "
              f"(busiest 1 s: {busiest(busy, 1.0):.1f}, busiest 5 s: {busiest(busy, 5.0):.1f}); "
              f"{samples[-1][1]} requests, {leases} budget leases")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["throughput", "rate", "both"], default="both")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-median", type=float, default=1.0)
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--rate-rows", type=int, default=1000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print(describe_machine(["foxbatch", "sqlalchemy", "psycopg", "httpx", "aiohttp",
                            "uvicorn"]))
    with psycopg.connect(args.pg) as conn:
        print(conn.execute("SELECT version()").fetchone()[0].split(" on ")[0])
    if args.mode in ("throughput", "both"):
        throughput(args)
    if args.mode in ("rate", "both"):
        rate(args)


if __name__ == "__main__":
    main()
