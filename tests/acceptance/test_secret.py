"""The API key never lands in the database, a log line, an error message or an export."""

from __future__ import annotations

import json

from click.testing import CliRunner

from foxbatch.cli import main
from foxbatch.sim import SimConfig
from foxbatch.sim.server import serve_in_thread

KEY = "sk-canary-7f3a9c2e51d84b6f0a1e"
WRONG_KEY = "sk-wrong-canary-55c1d2e3f4a5b6"


def test_the_api_key_is_written_nowhere(tmp_path, monkeypatch):
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"row {i}"}) + "\n"
                              for i in range(8)))
    db = f"sqlite:///{tmp_path / 'store.db'}"
    outputs = []
    with serve_in_thread(SimConfig(api_key=KEY, latency_median=0.05)) as url:
        def run(key: str, *args: str):
            monkeypatch.setenv("FOXAPI_API_KEY", key)
            result = CliRunner().invoke(main, ["--db", db, "-vv", "--base-url", url, *args])
            outputs.append(result.output)
            return result

        ok = run(KEY, "run", str(source), "--model", "gpt-5.4", "-o", str(tmp_path / "o.jsonl"))
        assert ok.exit_code == 0, ok.output
        assert run(KEY, "--log-json", "export", "prompts", "--raw", "-o",
                   str(tmp_path / "o.csv")).exit_code == 0
        assert run(KEY, "status", "prompts", "--json").exit_code == 0
        refused = run(WRONG_KEY, "run", str(source), "--job", "again", "--model", "gpt-5.5")
        assert refused.exit_code == 3 and "FOXAPI_API_KEY" in refused.output
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"store.db", "o.jsonl", "o.csv"}
    for secret in (KEY, WRONG_KEY):
        for path in written:
            assert secret.encode() not in path.read_bytes(), path
        for output in outputs:
            assert secret not in output
