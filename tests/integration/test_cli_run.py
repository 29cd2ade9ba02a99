"""`foxbatch run`, `submit` and `poll` with --sim, -o checked before any work, and the API key
that only --sim can do without."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": f"k{i}", "prompt": f"say {i}"}) + "\n"
                            for i in range(5)))
    return str(path)


def test_submit_then_poll_with_the_simulator_then_export(cli, prompts, tmp_path):
    submitted = cli("submit", prompts, "--sim", "--model", "gpt-5.4")
    assert submitted.exit_code == 0, submitted.output
    assert "the answers are simulated" in submitted.stderr
    assert "submitted 5 row(s)" in submitted.stderr
    # another in-process simulator does not know these tasks: they are resubmitted (404)
    polled = cli("poll", "--until-done", "--sim", "--retry-base", "0.05")
    assert polled.exit_code == 0, polled.output
    out = tmp_path / "out.jsonl"
    assert cli("export", "p", "-o", str(out)).exit_code == 0
    assert [json.loads(line)["status"] for line in out.read_text().splitlines()] == [
        "succeeded"] * 5


def test_run_exports_to_o(cli, prompts, tmp_path):
    out = tmp_path / "out.csv"
    result = cli("run", prompts, "--sim", "--model", "gpt-5.4", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"exported 5 row(s) to {out}" in result.stderr
    assert len(out.read_text().splitlines()) == 6


@pytest.mark.parametrize(("target", "message"), [
    ("out.txt", "unknown export format 'txt'"),
    ("missing/out.csv", "does not exist"),
])
def test_run_checks_o_before_doing_any_work(cli, prompts, tmp_path, target, message):
    result = cli("run", prompts, "--sim", "--model", "gpt-5.4", "-o", str(tmp_path / target))
    assert result.exit_code == 1 and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert cli("jobs").output == "no jobs in this database\n"


@pytest.mark.parametrize("command", ["run", "submit"])
def test_without_a_key_only_sim_works(cli, prompts, monkeypatch, command):
    monkeypatch.delenv("FOXAPI_API_KEY", raising=False)
    result = cli(command, prompts, "--model", "gpt-5.4")
    assert result.exit_code == 1
    assert result.stderr.endswith("foxbatch: error: FOXAPI_API_KEY is not set (or pass --sim "
                                  "to try the simulator)\n")
    polled = cli("poll", "--until-done")
    assert polled.exit_code == 1 and "FOXAPI_API_KEY is not set" in polled.stderr
