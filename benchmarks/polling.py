"""GETs per task and result-recording delay: foxbatch's adaptive poller against a fixed 5 s one.

For each latency spread (--sigmas), N tasks with lognormal durations (median --median seconds)
are run twice, one poller after the other, each against a fresh simulator with the same seed
served on loopback in a background thread of this process (uvicorn, real HTTP):

  1. baseline: a hand-written aiohttp loop that submits every task at once, then GETs each one
     every --interval seconds (the fixed 5 s of third-party pollers) until it is finished, and
     keeps the results in memory;
  2. foxbatch: a `Runner` over a fresh SQLite store holding the same rows, polling adaptively
     (foxbatch.schedule.PollPlanner), every state change durable.

Both send the same request bodies to simulators with the same seed, so each task takes exactly
as long under both pollers. Per poller: GETs per task (the simulator's poll counter over the
tasks it created), and the recording delay of each result: when it was recorded (foxbatch:
`items.finished_at`; baseline: when its answer arrived) minus when the task became ready (its
creation plus its drawn duration, read from the simulator's task table). Targets (issue 5):
at most 2 GETs per task on average, each result recorded within max(1 s, 25% of its duration).

    python benchmarks/polling.py [--tasks 400] [--sigmas 0.5,1.0] [--median 4] [--interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from foxbatch.client import FoxClient  # noqa: E402
from foxbatch.models import RequestSpec, request_hash  # noqa: E402
from foxbatch.runner import Runner  # noqa: E402
from foxbatch.sim import SimConfig, Simulator, serve_in_thread  # noqa: E402
from foxbatch.store import open_store  # noqa: E402
from foxbatch.store.records import NewItem  # noqa: E402
from foxbatch.submitter import EngineOptions  # noqa: E402

API_KEY = "sk-bench"
MODEL = "gpt-5.4"
SEED = 1
LIBRARIES = ("foxbatch", "aiohttp", "httpx", "sqlalchemy", "uvicorn")
MAX_GETS_PER_TASK = 2.0
MIN_SLACK = 1.0
SLACK_SHARE = 0.25
CONNECTIONS = 64  # as foxbatch's default --concurrency
FINISHED = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class Outcome:
    """One poller's figures over one set of tasks."""

    name: str
    gets_per_task: float
    in_target: float  # share of results recorded within max(1 s, 25% of the task's duration)
    delay_p50: float
    delay_p95: float
    delay_max: float
    wall: float
    tasks: int


def request_bodies(count: int) -> list[str]:
    """Distinct request bodies, as foxbatch stores and sends them (canonical JSON)."""
    return [RequestSpec(model=MODEL, prompt=f"row {i}: say something", max_tokens=32)
            .canonical_json() for i in range(1, count + 1)]


def task_timing(sim: Simulator, task_id: str) -> tuple[float, float]:
    """(ready at, duration) of one task, from the in-process simulator's task table.

    The simulator has no public view of its tasks' drawn durations, hence the private read.
    """
    task = sim._tasks.get(task_id)
    if task is None:
        raise SystemExit(f"the simulator does not know task {task_id}")
    return task.finished_at, task.latency


def summarise(name: str, sim: Simulator, recorded: dict[str, float], wall: float) -> Outcome:
    """The figures of one poller from its results' recording times and the simulator."""
    stats = sim.stats()
    if stats["duplicates"] or stats["tasks_created"] != len(recorded):
        raise SystemExit(f"{name}: {len(recorded)} results for {stats['tasks_created']} tasks "
                         f"({stats['duplicates']} duplicates)")
    delays, within = [], 0
    for task_id, recorded_at in recorded.items():
        ready, duration = task_timing(sim, task_id)
        delay = recorded_at - ready
        delays.append(delay)
        within += delay <= max(MIN_SLACK, SLACK_SHARE * duration)
    return Outcome(name, stats["polls"] / stats["tasks_created"], within / len(recorded),
                   statistics.median(delays), quantile(delays, 0.95), max(delays), wall,
                   len(recorded))


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def get_task(session: aiohttp.ClientSession, task_id: str) -> dict:
    """GET a task; once more if the server closed (or reset) a kept-alive connection under the
    request (a keep-alive race: the 5 s interval meets uvicorn's 5 s keep-alive timeout; not
    an answer: a GET is safe to repeat, and the simulator counts it)."""
    try:
        return await _get_json(session, f"/v1/tasks/{task_id}")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return await _get_json(session, f"/v1/tasks/{task_id}")


async def _get_json(session: aiohttp.ClientSession, path: str) -> dict:
    async with session.get(path) as response:
        return await response.json()


async def fixed_poller(url: str, bodies: list[str], interval: float,
                       deadline: float) -> tuple[dict[str, float], float]:
    """Submit every body at once, then GET each task every `interval` s until it is finished.

    Returns {task id: when its result arrived} and the seconds taken.
    """
    recorded: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    start = time.monotonic()
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:
        async def one(body: str) -> None:
            async with session.post("/v1/llm/generations", data=body) as response:
                task_id = (await response.json())["id"]
            while time.monotonic() < deadline:
                await asyncio.sleep(interval)
                task = await get_task(session, task_id)
                if task["status"] in FINISHED and (task["results"] or task["error"]):
                    recorded[task_id] = time.time()
                    return
            raise SystemExit(f"baseline: task {task_id} not finished in time")

        await asyncio.gather(*(one(body) for body in bodies))
    return recorded, time.monotonic() - start


async def foxbatch_engine(url: str, bodies: list[str], workdir: Path,
                          timeout: float) -> tuple[dict[str, float], float]:
    """Run foxbatch's engine over a fresh SQLite store holding the bodies as one job.

    Returns {task id: items.finished_at} and the seconds the run took.
    """
    repo = open_store(f"sqlite:///{workdir / 'polling.db'}")
    job = repo.ensure_job("polling")
    repo.add_items(job.id, [NewItem(str(i), i, f'{{"id": {i}}}', body, request_hash(body), MODEL)
                            for i, body in enumerate(bodies, start=1)])
    start = time.monotonic()
    async with FoxClient(url, API_KEY) as client:
        runner = Runner(repo, client, EngineOptions(), job_ids=[job.id])
        summary = await asyncio.wait_for(runner.run(), timeout)
    wall = time.monotonic() - start
    if summary.reason != "done" or summary.counts["succeeded"] != len(bodies):
        raise SystemExit(f"foxbatch: run ended {summary.reason} with {summary.counts}")
    recorded = {item["task_id"]: item["finished_at"] for item in repo.iter_items(job.id)}
    return recorded, wall


async def measure(sigma: float, args: argparse.Namespace, workdir: Path) -> list[Outcome]:
    """The baseline, then foxbatch, over the same tasks, each against a fresh simulator."""
    config = SimConfig(seed=SEED, latency_median=args.median, latency_sigma=sigma)
    base_sim, fox_sim = Simulator(config), Simulator(config)
    bodies = request_bodies(args.tasks)
    with serve_in_thread(base_sim) as url:
        base_recorded, base_wall = await fixed_poller(url, bodies, args.interval,
                                                      time.monotonic() + args.timeout)
    with serve_in_thread(fox_sim) as url:
        fox_recorded, fox_wall = await foxbatch_engine(url, bodies, workdir, args.timeout)
    durations = sorted(task_timing(fox_sim, task_id)[1] for task_id in fox_recorded)
    print(f"\nsigma {sigma}: {args.tasks} tasks, durations p50 {statistics.median(durations):.1f} "
          f"s, p95 {quantile(durations, 0.95):.1f} s, max {durations[-1]:.1f} s")
    return [summarise(f"fixed {args.interval:g} s (baseline)", base_sim, base_recorded,
                      base_wall),
            summarise("foxbatch (adaptive)", fox_sim, fox_recorded, fox_wall)]


def print_table(outcomes: list[Outcome]) -> None:
    """One line per poller."""
    print(f"  {'poller':<22} {'GETs/task':>9} {'in target':>9} {'delay p50':>9} "
          f"{'delay p95':>9} {'delay max':>9} {'wall':>7}")
    for o in outcomes:
        print(f"  {o.name:<22} {o.gets_per_task:9.2f} {o.in_target:9.1%} {o.delay_p50:8.2f}s "
              f"{o.delay_p95:8.2f}s {o.delay_max:8.2f}s {o.wall:6.1f}s")


def verdict(sigma: float, fox: Outcome) -> bool:
    """Print foxbatch's figures against the targets; return whether both are met."""
    gets_ok = fox.gets_per_task <= MAX_GETS_PER_TASK
    delay_ok = fox.in_target == 1.0
    print(f"  sigma {sigma}: GETs/task {fox.gets_per_task:.2f} (target <= "
          f"{MAX_GETS_PER_TASK:g}): {'met' if gets_ok else 'MISSED'}; recorded within "
          f"max(1 s, 25% of duration): {fox.in_target:.1%} of {fox.tasks} (target 100%): "
          f"{'met' if delay_ok else 'MISSED'}")
    return gets_ok and delay_ok


def main() -> None:
    """Parse the bounds, measure each sigma, print the figures and the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks, all submitted at once")
    parser.add_argument("--sigmas", default="0.5,1.0",
                        help="comma-separated spreads of the lognormal task duration")
    parser.add_argument("--median", type=float, default=4.0, help="median task seconds")
    parser.add_argument("--interval", type=float, default=5.0, help="the baseline's interval")
    parser.add_argument("--timeout", type=float, default=150.0,
                        help="give up on a poller after this many seconds")
    args = parser.parse_args()
    print(describe_machine(list(LIBRARIES)))
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"simulators on loopback in this process (seed {SEED}); both pollers see the same task "
          "durations in the same run: compare them with each other")
    results: dict[float, list[Outcome]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for number, sigma in enumerate(float(s) for s in args.sigmas.split(",")):
            workdir = Path(tmp) / str(number)
            workdir.mkdir()
            results[sigma] = asyncio.run(measure(sigma, args, workdir))
            print_table(results[sigma])
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\nverdict (foxbatch against issue 5's targets):")
    met = [verdict(sigma, outcomes[-1]) for sigma, outcomes in results.items()]
    print("  all targets met" if all(met) else "  some targets MISSED")


if __name__ == "__main__":
    main()
