"""Ingest benchmark: `foxbatch ingest` of a generated JSONL file against raw sqlite3.

    python benchmarks/ingest.py                  # 1,000,000 rows, and 100,000 for memory
    python benchmarks/ingest.py --rows 200000 --small 20000

Generates JSONL files of short review-labelling prompts (about 140 bytes a line), then, each in
a fresh subprocess so that its peak RSS (ru_maxrss) is its own:

- foxbatch: `ingest(repo, path, IngestOptions(...))` into a new SQLite file, the library call the
  CLI makes (the store's schema is created first and not timed); a file of 16 MiB or more is
  read by a reader process while the calling process writes;
- foxbatch-1p: the same with the whole file read in the calling process;
- raw-loader: the same file read line by line, `json.loads` for the id, and sqlite3
  `executemany` of (id, line number, line) into one table keyed by id, in transactions of the
  same size as foxbatch's, with the store's pragmas (WAL, synchronous=NORMAL);
- raw-rows: the values foxbatch stores for each row (input, request, hash, model, status,
  times), prepared beforehand and not timed, inserted by sqlite3 `executemany` into one table
  keyed by row_key: what writing those bytes costs;
- raw-items: the same prepared values inserted by sqlite3 into the store's own `items` table,
  with its indexes and foreign key: the floor for foxbatch's writes.

Peak RSS of raw-rows and raw-items includes their prepared rows, all in memory.

Prints the machine, the library versions and, per size: wall-clock and CPU seconds (with child
processes), rows/s, peak RSS (and that of foxbatch's reader process, for a file large enough to
get one), and foxbatch's speed as a fraction of each raw figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_seconds, describe_machine  # noqa: E402

from foxbatch.ingest import IngestOptions, ingest  # noqa: E402
from foxbatch.store import open_store  # noqa: E402
from foxbatch.store.repository import COMMIT_ROWS  # noqa: E402

OPTIONS = IngestOptions(model="gpt-5.4", max_tokens=64, system="Answer with one word.")
SENTENCE = ("the battery lasts all day but the screen scratches easily and support never "
            "wrote back so I returned it after a week great value would buy again")
WORDS = tuple(SENTENCE.split(" "))
RAW_ROW_COLUMNS = ("row_key", "row_index", "input", "request", "request_hash", "model",
                   "status", "next_attempt_at", "created_at", "updated_at")


def generate(path: Path, rows: int) -> None:
    """Write `rows` JSONL review prompts to `path` (deterministic, unique ids and prompts)."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(1, rows + 1):
            words = " ".join(WORDS[(i * k) % len(WORDS)] for k in (3, 5, 7, 11, 13, 17, 19))
            out.write(json.dumps({"id": f"rev-{i:08d}", "prompt": f"Review #{i}: {words}. "
                                  "Positive or negative?", "stars": i % 5 + 1,
                                  "source": "web"}) + "\n")


class Stopwatch:
    """Wall-clock and CPU seconds (this process and its children) of a `with` block."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds(with_children=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = cpu_seconds(with_children=True) - self._cpu

    def figures(self, rows: int) -> dict:
        """What a measure reports."""
        return {"rows": rows, "seconds": self.seconds, "cpu_seconds": self.cpu_seconds}


def measure_foxbatch(path: str, db: str) -> dict:
    """Ingest `path` into a new store at `db`; time the ingest call only."""
    repo = open_store(f"sqlite:///{db}")
    with Stopwatch() as watch:
        report = ingest(repo, path, OPTIONS)
    repo.engine.dispose()
    assert report.inserted == report.rows_read and report.invalid == 0
    return watch.figures(report.rows_read)


def measure_foxbatch_one_process(path: str, db: str) -> dict:
    """The same, with the whole file read in this process (no reader process)."""
    import foxbatch.ingest

    foxbatch.ingest.READER_MIN_BYTES = sys.maxsize
    return measure_foxbatch(path, db)


def measure_raw_loader(path: str, db: str) -> dict:
    """What a hand-written loader does: read, json.loads for the id, executemany."""
    conn = _raw_connection(db)
    conn.execute("CREATE TABLE rows (row_key TEXT PRIMARY KEY, row_index INTEGER NOT NULL, "
                 "input TEXT NOT NULL)")
    with Stopwatch() as watch, open(path, encoding="utf-8") as lines:
        numbered = ((json.loads(line)["id"], n, line.rstrip("\n"))
                    for n, line in enumerate(lines, 1))
        rows = _insert_in_transactions(conn, "INSERT INTO rows VALUES (?, ?, ?)", numbered)
    conn.close()
    return watch.figures(rows)


def measure_raw_rows(path: str, db: str) -> dict:
    """foxbatch's stored values for every row, prepared first, then only inserted into one
    table keyed by row_key."""
    prepared = _prepared_rows(path)
    conn = _raw_connection(db)
    conn.execute(f"CREATE TABLE items ({', '.join(RAW_ROW_COLUMNS)}, PRIMARY KEY (row_key))")
    marks = ", ".join("?" * len(RAW_ROW_COLUMNS))
    with Stopwatch() as watch:
        rows = _insert_in_transactions(conn, f"INSERT INTO items VALUES ({marks})",
                                       iter(prepared))
    conn.close()
    return watch.figures(rows)


def measure_raw_items(path: str, db: str) -> dict:
    """The same prepared values inserted by plain sqlite3 into the store's own items table,
    with its indexes: the floor for foxbatch's writes."""
    prepared = _prepared_rows(path)
    repo = open_store(f"sqlite:///{db}")
    job = repo.ensure_job("raw")
    repo.engine.dispose()
    conn = _raw_connection(db)
    conn.execute("PRAGMA foreign_keys=ON")
    columns = ("job_id", *RAW_ROW_COLUMNS)
    sql = (f"INSERT INTO items ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
           "ON CONFLICT (job_id, row_key) DO NOTHING")
    with Stopwatch() as watch:
        rows = _insert_in_transactions(conn, sql, ((job.id, *row) for row in prepared))
    conn.close()
    return watch.figures(rows)


def _prepared_rows(path: str) -> list[tuple]:
    from foxbatch.inputs import InputFile

    now = time.time()
    with InputFile(path, OPTIONS.mapper()) as source:
        return [(r.key, r.number, r.input_json, r.request_json, r.request_hash, r.model,
                 "queued", 0.0, now, now) for r in source]


def _raw_connection(db: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _insert_in_transactions(conn: sqlite3.Connection, sql: str, rows) -> int:
    total = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes
        conn.executemany(sql, (row for _, row in zip(range(COMMIT_ROWS), rows, strict=False)))
        done = conn.total_changes - before
        conn.execute("COMMIT")
        total += done
        if done < COMMIT_ROWS:
            return total


MEASURES = {"foxbatch": measure_foxbatch, "foxbatch-1p": measure_foxbatch_one_process,
            "raw-loader": measure_raw_loader, "raw-rows": measure_raw_rows,
            "raw-items": measure_raw_items}


def run_measure(kind: str, path: Path, workdir: Path, repeat: int) -> dict:
    """Run one measure `repeat` times, each in a fresh interpreter; keep the fastest run (the
    one least disturbed by other work on the machine)."""
    runs = []
    for _ in range(repeat):
        db = workdir / f"{kind}-{path.stem}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        out = subprocess.run([sys.executable, __file__, "--measure", kind, str(path), str(db)],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.splitlines()[-1]))
    return min(runs, key=lambda figures: figures["seconds"])


def report(size: int, results: dict[str, dict]) -> None:
    """Print one size's figures."""
    fox = results["foxbatch"]
    print(f"\n{size:,} rows")
    for kind, figures in results.items():
        rate = figures["rows"] / figures["seconds"]
        line = (f"  {kind:<11} {figures['seconds']:7.2f} s ({figures['cpu_seconds']:6.2f} s CPU)"
                f"  {rate:>9,.0f} rows/s  peak RSS {figures['peak_rss_mib']:6.1f} MiB")
        if figures["reader_rss_mib"]:
            line += f" (+ reader process {figures['reader_rss_mib']:.1f} MiB)"
        if kind.startswith("raw"):
            line += f"  foxbatch speed = {figures['seconds'] / fox['seconds']:.2f} of this"
        print(line)


def main() -> None:
    """Parse arguments; generate, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000,
                        help="A second, smaller size to show memory staying flat (0: skip).")
    parser.add_argument("--repeat", type=int, default=1,
                        help="Run each measure this many times and keep the fastest.")
    parser.add_argument("--dir", type=Path, default=None,
                        help="Where the files go [default: a temporary folder].")
    parser.add_argument("--measure", nargs=3, metavar=("KIND", "INPUT", "DB"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kind, path, db = args.measure
        figures = MEASURES[kind](path, db)
        figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # foxbatch reads a large file in a reader process: its peak counts too.
        figures["reader_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps(figures))
        return
    print(describe_machine(["foxbatch", "sqlalchemy", "orjson", "pyarrow"]))
    print(f"load average before: {_load()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        for size in [s for s in (args.small, args.rows) if s]:
            path = workdir / f"reviews-{size}.jsonl"
            generate(path, size)
            print(f"\ngenerated {path.name}: {path.stat().st_size / 2**20:.0f} MiB")
            results = {kind: run_measure(kind, path, workdir, args.repeat)
                       for kind in MEASURES}
            report(size, results)
    print(f"\nload average after: {_load()}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
