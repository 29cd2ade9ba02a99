"""Peak memory of `foxbatch run` and of the export at 100k and 1M rows: flat as the job grows.

Against one `foxbatch sim` child process at zero latency on loopback, with the real CLI, each
size in a fresh SQLite store (FOXAPI_API_KEY=sk-bench, FOXAPI_BASE_URL at the simulator):

- small job (--rows-small, 100,000): `foxbatch run` to completion, or SIGINT once its engine
  has run --small-max-seconds (a bound on the whole script's time);
- large job (--rows-large, 1,000,000): `foxbatch run`, SIGINT once its engine has run
  --run-seconds (a full run would take too long here); it must exit 130 (resumable);
- each job: `foxbatch export JOB -o OUT.jsonl` of all its rows.

The engine's time runs from the ingest report on stderr to the process's exit; its rows/s are
the rows succeeded in that time (read from the store). Each phase is one child process; its peak
RSS is the `ru_maxrss` os.wait4 reports for it: the largest of the child and the processes it
waited for, such as ingest's reader process. The reader runs beside the main process, so the sum
of the RSS of the child and its children is also sampled every 0.2 s ("tree peak"). The sizes
are compared with each other, measured in the same run.

    python benchmarks/memory.py [--rows-small 100000] [--rows-large 1000000]
                                [--run-seconds 60] [--small-max-seconds 180]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from foxbatch.sim import SimConfig, serve_in_subprocess  # noqa: E402

LIBRARIES = ("foxbatch", "sqlalchemy", "orjson", "aiohttp", "httpx")
FOXBATCH = (sys.executable, "-m", "foxbatch")
SAMPLE_EVERY = 0.2
STOP_TIMEOUT = 60.0
PHASE_TIMEOUT = 300.0  # for a phase's own work: ingest, export
EXIT_OK, EXIT_INTERRUPTED = 0, 130
REVIEW = ("The battery lasts all day but the screen scratches easily, and support never wrote "
          "back, so I returned it after a week.")
FLAT_RATIO = 1.5  # the large job's peak may be at most this many times the small one's
_INGESTED = re.compile(r"^job \S+: [\d,]+ rows read")


@dataclass
class Phase:
    """One measured child process."""

    name: str
    seconds: float = 0.0
    engine_seconds: float = 0.0  # from the ingest report to the exit
    peak_rss_mib: float = 0.0  # ru_maxrss from wait4
    peak_tree_mib: float = 0.0  # sampled sum over the child and its children
    exit_code: int = 0
    stderr: list[str] = field(default_factory=list)


def generate(path: Path, rows: int) -> None:
    """Write `rows` JSONL prompts with unique ids and prompts (about 200 bytes a line, so that
    even the small file is read by ingest's reader process, as the large one is)."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            out.write(json.dumps({"id": f"row-{i:08d}", "prompt": f"Review #{i}: {REVIEW} "
                                  "Positive or negative?", "stars": i % 5 + 1}) + "\n")


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its direct children, in MiB (0 once it has gone)."""
    total = 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    for member in (pid, *map(int, children)):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match.group(1)) if match else 0
    return total / 1024


def run_phase(name: str, command: list[str], env: dict[str, str], *,
              interrupt_after: float | None = None) -> Phase:
    """Run one child to its end; measure its time and memory.

    With `interrupt_after`, send it SIGINT (as Ctrl-C would) if it is still running that many
    seconds after its ingest report appeared on stderr.
    """
    phase = Phase(name)
    start = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    ingested = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            phase.stderr.append(line.rstrip("\n"))
            if _INGESTED.match(line):
                ingested.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    ingested_at = None
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        now = time.monotonic()
        if now - start > PHASE_TIMEOUT + (interrupt_after or 0):
            process.kill()
            process.wait()
            raise SystemExit(f"{name}: still running after {now - start:.0f} s")
        phase.peak_tree_mib = max(phase.peak_tree_mib, tree_rss_mib(process.pid))
        if ingested_at is None and ingested.is_set():
            ingested_at = now
        if interrupt_after is not None and ingested_at and now >= ingested_at + interrupt_after:
            process.send_signal(signal.SIGINT)
            interrupt_after = None
        time.sleep(SAMPLE_EVERY)
    end = time.monotonic()
    process.returncode = phase.exit_code = os.waitstatus_to_exitcode(status)
    phase.seconds = end - start
    phase.engine_seconds = end - ingested_at if ingested_at else 0.0
    phase.peak_rss_mib = usage.ru_maxrss / 1024
    reader.join(STOP_TIMEOUT)
    return phase


def counts(db: Path, job: str) -> dict[str, int]:
    """Rows of the job per status, read straight from the store."""
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT i.status, count(*) FROM items i JOIN jobs j "
                                 "ON j.id = i.job_id WHERE j.name = ? GROUP BY i.status",
                                 (job,)).fetchall())


def measure_size(rows: int, workdir: Path, env: dict[str, str], run_seconds: float, *,
                 must_stop: bool) -> tuple[list[Phase], dict[str, int]]:
    """Run one job of `rows` rows (SIGINT after `run_seconds` of engine time if still running,
    which it must be if `must_stop`), then export it; return the phases and the job's counts."""
    job, db = f"bench{rows}", workdir / f"bench{rows}.db"
    source, out = workdir / f"{job}.jsonl", workdir / f"{job}.export.jsonl"
    generate(source, rows)
    run = run_phase("run", [*FOXBATCH, "--db", f"sqlite:///{db}", "run", str(source), "--job",
                            job, "--model", "gpt-5.4", "--max-tokens", "32"], env,
                    interrupt_after=run_seconds)
    allowed = (EXIT_INTERRUPTED,) if must_stop else (EXIT_OK, EXIT_INTERRUPTED)
    if run.exit_code not in allowed:
        raise SystemExit(f"foxbatch run of {rows} rows exited {run.exit_code} (expected "
                         f"{allowed}):\n" + "\n".join(run.stderr[-20:]))
    if run.exit_code == EXIT_INTERRUPTED:
        run.name = f"run, SIGINT after {run_seconds:g} s"
    export = run_phase("export", [*FOXBATCH, "--db", f"sqlite:///{db}", "export", job, "-o",
                                  str(out)], env)
    if export.exit_code != EXIT_OK:
        raise SystemExit(f"export of {rows} rows failed:\n" + "\n".join(export.stderr[-20:]))
    with out.open("rb") as lines:
        exported = sum(1 for _ in lines)
    if exported != rows:
        raise SystemExit(f"export wrote {exported} rows of {rows}")
    for path in (source, out):
        path.unlink()
    return [run, export], counts(db, job)


def main() -> None:
    """Parse the bounds; measure both sizes; print the table and the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-small", type=int, default=100_000,
                        help="rows of the job run to completion (or --small-max-seconds)")
    parser.add_argument("--rows-large", type=int, default=1_000_000,
                        help="rows of the job interrupted after --run-seconds")
    parser.add_argument("--run-seconds", type=float, default=60.0,
                        help="seconds the large job's engine runs before SIGINT")
    parser.add_argument("--small-max-seconds", type=float, default=180.0,
                        help="SIGINT the small job too if its engine runs this long")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the files go [default: a temporary folder]")
    args = parser.parse_args()
    print(describe_machine(list(LIBRARIES)))
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = {}
    with serve_in_subprocess(SimConfig(seed=1)) as url, \
            tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        env = {**os.environ, "FOXAPI_API_KEY": "sk-bench", "FOXAPI_BASE_URL": url}
        results[args.rows_small] = measure_size(args.rows_small, Path(tmp), env,
                                                args.small_max_seconds, must_stop=False)
        results[args.rows_large] = measure_size(args.rows_large, Path(tmp), env,
                                                args.run_seconds, must_stop=True)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report(results)
    verdict(results)


def report(results: dict[int, tuple[list[Phase], dict[str, int]]]) -> None:
    """One line per phase: time, peak RSS, tree peak, and what the run did."""
    print("\nsimulator at zero latency (`foxbatch sim`, loopback); fresh SQLite store per job; "
          "default engine options (--concurrency 64)")
    print(f"  {'rows':>9}  {'phase':<23} {'seconds':>7} {'peak RSS':>10} {'tree peak':>10}  "
          "notes")
    for rows, (phases, final) in results.items():
        for phase in phases:
            note = ""
            if phase.name.startswith("run"):
                done = final.get("succeeded", 0)
                note = (f"succeeded {done:,} of {rows:,}; engine {phase.engine_seconds:.0f} s, "
                        f"{done / phase.engine_seconds:,.0f} rows/s")
                if done == rows:
                    note += f"; whole command {rows / phase.seconds:,.0f} rows/s"
            print(f"  {rows:>9,}  {phase.name:<23} {phase.seconds:7.1f} "
                  f"{phase.peak_rss_mib:6.1f} MiB {phase.peak_tree_mib:6.1f} MiB  {note}")


def verdict(results: dict[int, tuple[list[Phase], dict[str, int]]]) -> None:
    """Memory is flat if each phase of the large job peaks (both measures) within FLAT_RATIO
    of the small job's."""
    (small, (small_phases, small_final)), (large, (large_phases, _)) = results.items()
    print(f"\nverdict: memory flat from {small:,} to {large:,} rows (each phase's peaks at most "
          f"{FLAT_RATIO:g}x the small job's)?")
    flat = True
    for a, b in zip(small_phases, large_phases, strict=True):
        ratio = max(b.peak_rss_mib / a.peak_rss_mib, b.peak_tree_mib / a.peak_tree_mib)
        flat &= ratio <= FLAT_RATIO
        print(f"  {b.name.split(',')[0]:<7} peak RSS {a.peak_rss_mib:6.1f} -> "
              f"{b.peak_rss_mib:6.1f} MiB, tree peak {a.peak_tree_mib:6.1f} -> "
              f"{b.peak_tree_mib:6.1f} MiB (up to {ratio:.2f}x): "
              f"{'flat' if ratio <= FLAT_RATIO else 'GROWS'}")
    print("  memory stays flat" if flat else "  memory GROWS with the job")
    if small_final.get("succeeded", 0) != small:
        print(f"  note: the {small:,}-row job did not finish within --small-max-seconds")


if __name__ == "__main__":
    main()
