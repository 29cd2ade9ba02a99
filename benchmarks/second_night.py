"""Two nights on one store: does what the first run learned keep the second within the polling
targets? (issue 5: each result recorded within max(1 s, 25% of its task's duration), with few
GETs.)

For each median task duration (--medians), two jobs of --tasks rows run one after the other
through foxbatch's engine (a `Runner`) on the same SQLite store, each against its own
simulator (lognormal durations, --sigma) served on loopback in a background thread. The second
run starts from the durations the first one's tasks showed (`recent_durations`). Prints, per
night: GETs per task and the share of results recorded within the target.

    python benchmarks/second_night.py [--medians 0.3,1,4] [--sigma 0.5] [--tasks 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402
from polling import API_KEY, MODEL, request_bodies, summarise  # noqa: E402

from foxbatch.client import FoxClient  # noqa: E402
from foxbatch.models import request_hash  # noqa: E402
from foxbatch.runner import Runner  # noqa: E402
from foxbatch.sim import SimConfig, Simulator  # noqa: E402
from foxbatch.sim.server import serve_in_thread  # noqa: E402
from foxbatch.store import Repository, open_store  # noqa: E402
from foxbatch.store.records import NewItem  # noqa: E402
from foxbatch.submitter import EngineOptions  # noqa: E402


async def one_night(repo: Repository, name: str, bodies: list[str], url: str
                    ) -> tuple[dict[str, float], float]:
    """Run a job of `bodies` to the end; return {task id: recorded at} and the wall time."""
    job = repo.ensure_job(name)
    repo.add_items(job.id, [NewItem(str(i), i, f'{{"id": {i}}}', body, request_hash(body),
                                    MODEL) for i, body in enumerate(bodies, start=1)])
    start = time.monotonic()
    async with FoxClient(url, API_KEY) as client:
        await Runner(repo, client, EngineOptions(), job_ids=[job.id]).run()
    recorded = {item["task_id"]: item["finished_at"] for item in repo.iter_items(job.id)}
    return recorded, time.monotonic() - start


async def two_nights(median: float, sigma: float, tasks: int, workdir: Path) -> None:
    """Both nights for one median duration, printed."""
    repo = open_store(f"sqlite:///{workdir / f'nights-{median:g}.db'}")
    for night in (1, 2):
        sim = Simulator(SimConfig(seed=night, latency_median=median, latency_sigma=sigma))
        bodies = request_bodies(tasks)
        with serve_in_thread(sim) as url:
            recorded, wall = await one_night(repo, f"night-{night}", bodies, url)
        o = summarise(f"night {night}", sim, recorded, wall)
        print(f"  median {median:g} s, night {night}: {o.gets_per_task:.2f} GETs/task, "
              f"{o.in_target:.1%} recorded in target, delay p50 {o.delay_p50:.2f} s, "
              f"max {o.delay_max:.2f} s", flush=True)
    repo.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medians", default="0.3,1,4")
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    print(describe_machine(["foxbatch", "aiohttp", "sqlalchemy", "uvicorn"]))
    with tempfile.TemporaryDirectory() as tmp:
        for median in (float(m) for m in args.medians.split(",")):
            asyncio.run(two_nights(median, args.sigma, args.tasks, Path(tmp)))


if __name__ == "__main__":
    main()
