"""`foxbatch submit --dry-run`: the plan, with nothing stored and nothing sent."""

from __future__ import annotations

import json
import re

from foxbatch.store import open_store

FLAGS = ["--model", "gpt-5.4", "--max-tokens", "32"]


def write_rows(path, prompts):
    path.write_text("".join(json.dumps({"id": f"k{i}", "prompt": p}) + "\n"
                            for i, p in enumerate(prompts)))


def figures(output: str) -> dict[str, int]:
    return {label.strip(): int(value.replace(",", "")) for label, value in
            re.findall(r"^  (.+?):\s+([\d,]+)$", output, flags=re.M)}


def test_a_new_file_is_all_new_and_nothing_is_stored(cli, tmp_path, sqlite_url):
    source = tmp_path / "eval.jsonl"
    write_rows(source, ["a" * 40, "b" * 80, ""])
    result = cli("submit", str(source), *FLAGS, "--dry-run")
    assert result.exit_code == 0, result.output
    plan = figures(result.stdout)
    assert plan["rows read"] == 3 and plan["new rows"] == 2 and plan["invalid"] == 1
    assert plan["requests it would send"] == 2
    assert plan["estimated prompt tokens"] == 30  # (40 + 80) characters / 4
    repo = open_store(sqlite_url)
    assert repo.find_job("eval") is None
    repo.engine.dispose()


def test_rows_already_stored_or_finished_are_told_apart(cli, tmp_path):
    source = tmp_path / "eval.jsonl"
    write_rows(source, ["first prompt", "second prompt"])
    assert cli("run", str(source), *FLAGS, "--sim").exit_code == 0
    write_rows(source, ["first prompt", "second prompt", "third prompt"])
    assert cli("ingest", str(source), *FLAGS).exit_code == 0
    plan = figures(cli("submit", str(source), *FLAGS, "--dry-run").stdout)
    assert plan["already finished (not sent again)"] == 2
    assert plan["stored, not finished yet"] == 1 and plan["new rows"] == 0
    assert plan["requests it would send"] == 1


def test_a_missing_file_is_one_line_and_exit_1(cli, tmp_path):
    result = cli("submit", str(tmp_path / "nope.jsonl"), *FLAGS, "--dry-run")
    assert result.exit_code == 1
    assert "nope.jsonl" in result.stderr and "Traceback" not in result.output
