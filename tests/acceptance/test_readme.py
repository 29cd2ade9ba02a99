"""The README's commands as written: the quick start runs word for word (after its set-up
steps, which CI has already done), the test command is what .ci/run runs, every command the
README shows exists, and the sample jobs are valid."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click

from foxbatch.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETUP = ["python3 -m venv .venv", ". .venv/bin/activate", "pip install ."]
DEV_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]' && pytest"


def first_block_after(heading: str) -> str:
    """The first fenced code block after `heading`."""
    section = README.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```\w*\n(.*?)```", section, re.S).group(1).strip()


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `command` with bash in `cwd`, this interpreter's foxbatch first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("FOXAPI_API_KEY", None)
    env.pop("FOXBATCH_DB", None)
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=110)


def test_quick_start_runs_as_written(tmp_path):
    steps = first_block_after("## Quick start").split(" && ")
    assert steps[:len(SETUP)] == SETUP  # the install steps, done by CI already
    shutil.copytree(ROOT / "sample_jobs", tmp_path / "sample_jobs")
    run = shell(" && ".join(steps[len(SETUP):]), tmp_path)
    assert run.returncode == 0, run.stderr
    assert "the answers are simulated" in run.stderr
    with (tmp_path / "labeled.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30 and {r["status"] for r in rows} == {"succeeded"}
    assert all(r["output"] for r in rows)
    lamp = next(r for r in rows if r["id"] == "r-1005")
    assert lamp["review"].startswith("'=== Best lamp")  # the CSV formula guard
    again = shell(" && ".join(steps[len(SETUP):]), tmp_path)
    assert again.returncode == 0 and "0 new, 30 already present" in again.stderr


def test_the_test_command_is_what_ci_runs():
    assert first_block_after("## Development") == DEV_COMMAND
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "pip install -q -e '.[dev]'" in ci and ci[-1] == "pytest"


def test_every_command_the_readme_shows_exists():
    code = "\n".join(re.findall(r"```\w*\n(.*?)```", README, re.S)
                     + re.findall(r"`([^`\n]+)`", README))
    shown = set(re.findall(r"(?:^|[\s/])foxbatch(?: --db \S+)? ([a-z]+)", code, re.M))
    ctx = click.Context(main)
    assert shown >= {"run", "status", "export", "sim", "retry", "cancel", "jobs", "poll"}
    assert {name for name in shown if main.get_command(ctx, name) is None} == set()


def test_the_sample_jobs_are_valid_requests(tmp_path):
    for name in ("reviews.csv", "eval.jsonl"):
        run = shell(f"foxbatch --db sqlite:///{tmp_path / 'x.db'} ingest "
                    f"{ROOT / 'sample_jobs' / name}", tmp_path)
        assert run.returncode == 0 and " 0 invalid" in run.stdout, run.stdout + run.stderr
