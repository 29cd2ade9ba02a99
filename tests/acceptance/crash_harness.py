"""Run `foxbatch run` as a real process against a real `foxbatch sim`, kill it, check the store.

The invariants every crash test checks afterwards:
- no row is lost: every input row is in the store and finished;
- every succeeded row holds the answer to its own prompt;
- the simulator's duplicate tasks are at most the in-doubt resubmissions foxbatch reported;
- `PRAGMA integrity_check` is ok;
- the export file is either absent/old or complete.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from foxbatch.sim import expected_completion

MODEL = "gpt-5.4"


@dataclass
class Job:
    """One crash-test job: its input, database and export paths."""

    folder: Path
    rows: int

    @property
    def input(self) -> Path:
        return self.folder / "prompts.jsonl"

    @property
    def db(self) -> Path:
        return self.folder / "store.db"

    @property
    def output(self) -> Path:
        return self.folder / "out.jsonl"

    def write_input(self) -> None:
        with self.input.open("w") as out:
            for i in range(1, self.rows + 1):
                out.write(json.dumps({"id": f"r{i}", "prompt": f"crash test row {i}"}) + "\n")

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "foxbatch", "--db", f"sqlite:///{self.db}", "-q", "run",
                str(self.input), "--model", MODEL, "--max-tokens", "32", "--max-attempts",
                "10", "--concurrency", "32", "--retry-base", "0.05",
                "-o", str(self.output), *extra]

    def start(self, base_url: str, crash_at: str | None = None, *,
              capture: bool = False) -> subprocess.Popen[bytes]:
        env = {**os.environ, "FOXAPI_API_KEY": "sk-crash", "FOXAPI_BASE_URL": base_url}
        env.pop("FOXBATCH_CRASH_AT", None)
        if crash_at:
            env["FOXBATCH_CRASH_AT"] = crash_at
        return subprocess.Popen(self.command(), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE if capture else subprocess.DEVNULL)

    def run_to_end(self, base_url: str, crash_at: str | None = None,
                   timeout: float = 120) -> tuple[int, str]:
        process = self.start(base_url, crash_at, capture=True)
        _, err = process.communicate(timeout=timeout)
        return process.returncode, err.decode("utf-8", "replace")


def sim_stats(base_url: str) -> dict:
    """The simulator's counters (over HTTP)."""
    with urllib.request.urlopen(f"{base_url}/_sim/stats", timeout=10) as response:
        return json.load(response)


def check_invariants(job: Job, base_url: str) -> dict:
    """Assert the crash invariants; return a summary for messages."""
    conn = sqlite3.connect(job.db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT row_key, request, request_hash, status, output, "
                            "in_doubt_resubmits, error_code FROM items").fetchall()
        known = dict(conn.execute("SELECT i.request_hash, count(DISTINCT a.task_id) FROM "
                                  "attempts a JOIN items i ON i.id = a.item_id "
                                  "WHERE a.task_id IS NOT NULL GROUP BY i.request_hash"))
    finally:
        conn.close()
    assert len(rows) == job.rows, "a row was lost"
    in_doubt = 0
    for key, request, _, status, output, doubt, code in rows:
        assert status == "succeeded", (key, status, code)
        assert output == expected_completion(json.loads(request)), key
        in_doubt += doubt
    unknown = unknown_tasks(sim_stats(base_url)["tasks_by_hash"], known)
    assert unknown <= in_doubt, (unknown, in_doubt)
    check_export(job)
    return {"in_doubt": in_doubt, "unknown_tasks": unknown}


def unknown_tasks(created: dict[str, int], known: dict[str, int]) -> int:
    """Tasks the simulator created that foxbatch has no record of (the ones paid for without
    a result): per request, tasks created minus task ids in the attempts table. Retries after
    a failed or vanished task are known tasks, not duplicates; only in-doubt submits can leave
    unknown ones. Every task foxbatch recorded must also exist in the simulator."""
    for request_hash, n in known.items():
        assert created.get(request_hash, 0) >= n, "foxbatch recorded a task the API never made"
    return sum(max(0, n - known.get(h, 0)) for h, n in created.items())


def check_export(job: Job) -> None:
    """The export has every row, in input order, each with its own answer."""
    lines = job.output.read_text().splitlines()
    assert len(lines) == job.rows
    keys = [json.loads(line)["id"] for line in lines]
    assert keys == [f"r{i}" for i in range(1, job.rows + 1)]
    assert all(json.loads(line)["status"] == "succeeded" for line in lines)
