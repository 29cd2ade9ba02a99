"""The simulator's parts on their own: answers, task phases and fates, the rps bucket, knob
checks, counters, and the `foxbatch sim` command line."""

from __future__ import annotations

import dataclasses
import math
import re
import socket
import statistics

import pytest
from click.testing import CliRunner

from foxbatch.cli import main
from foxbatch.cli.sim import config_from_options, sim_command
from foxbatch.errors import ConfigError
from foxbatch.models import RequestSpec, canonical_json, request_hash
from foxbatch.sim import FAULT_KINDS, SimConfig, expected_completion
from foxbatch.sim.answers import chat_completion
from foxbatch.sim.bucket import TokenBucket
from foxbatch.sim.server import config_to_args
from foxbatch.sim.stats import Counters
from foxbatch.sim.tasks import Fate, Task, TaskTable


def body(prompt: str = "Hello there", **fields) -> dict:
    return RequestSpec(model=fields.pop("model", "gpt-5.4"), prompt=prompt, **fields).to_body()


def new_tasks(config: SimConfig, n: int) -> list[Task]:
    table = TaskTable(config)
    bodies = [body(f"row {i}") for i in range(n)]
    return [table.create(b, request_hash(canonical_json(b)), 0, 0.0) for b in bodies]


# Answers


def test_answer_names_the_model_tag_and_gist():
    text = expected_completion(body("  Write   a haiku\nabout the sea, please, in English words "))
    assert re.fullmatch(r"\[[0-9a-f]{12}\] Simulated answer from gpt-5\.4 to: "
                        r"Write a haiku about the sea, please, in", text)


@pytest.mark.parametrize("change", [
    {"prompt": "Hello there!"}, {"system_prompt": "Be brief"}, {"model": "kimi-k2.6"}])
def test_answer_changes_with_model_system_prompt_and_prompt(change):
    assert expected_completion(body(**{"prompt": "Hello there", **change})) != (
        expected_completion(body()))


def test_answer_ignores_sampling_parameters():
    assert expected_completion(body(temperature=0.3)) == expected_completion(body())


def test_messages_answer_quotes_the_last_user_message():
    messages = ({"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "second question"}]})
    text = expected_completion(RequestSpec(model="gpt-5.4", messages=messages).to_body())
    assert text.endswith("to: second question")


def test_usage_is_about_four_characters_a_token():
    request = body("x" * 400, system_prompt="y" * 99)
    usage = chat_completion(request, completion_id="c", created=1)["usage"]
    assert usage["prompt_tokens"] == math.ceil(500 / 4)
    assert usage["completion_tokens"] == math.ceil(len(expected_completion(request)) / 4)


def test_small_max_tokens_cut_the_answer_with_finish_reason_length():
    request = body(max_tokens=5)
    completion = chat_completion(request, completion_id="c", created=1)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == expected_completion(request)
    assert len(expected_completion(request)) == 20
    assert completion["usage"]["completion_tokens"] == 5


def test_a_cut_answer_keeps_its_row_specific_tag():
    answers = {expected_completion(body(f"row {i}", max_tokens=1)) for i in range(50)}
    assert len(answers) == 50
    assert all(re.fullmatch(r"\[[0-9a-f]{12}\]", a) for a in answers)


# Tasks


@pytest.mark.parametrize("now,phase", [
    (100.0, ("pending", 0)), (100.9, ("pending", 0)), (101.0, ("processing", 10)),
    (105.5, ("processing", 55)), (109.99, ("processing", 99)), (110.0, ("completed", 100)),
])
def test_task_phase_follows_elapsed_time(now, phase):
    task = Task("t", body(), created=100.0, latency=10.0, fate=Fate.COMPLETE, error=None,
                empty_polls_left=0)
    assert task.phase(now) == phase


def test_failed_and_stuck_tasks_end_as_drawn():
    failed = Task("t", body(), 0.0, 1.0, Fate.FAIL, ("task_failed", "m"), 0)
    stuck = Task("t", body(), 0.0, 1.0, Fate.STUCK, None, 0)
    assert failed.phase(1.0) == ("failed", 100)
    assert stuck.phase(1e9) == ("processing", 99)


def test_fates_depend_on_seed_request_and_occurrence_not_on_order():
    config = SimConfig(seed=3, failure_rate=0.3, stuck_rate=0.2, latency_median=1.0,
                       latency_sigma=1.0)
    forward = new_tasks(config, 30)
    table = TaskTable(config)
    backward = [table.create(t.body, request_hash(canonical_json(t.body)), 0, 0.0)
                for t in reversed(forward)][::-1]
    assert [(t.id, t.latency, t.fate) for t in backward] == [
        (t.id, t.latency, t.fate) for t in forward]
    again = table.create(forward[0].body, request_hash(canonical_json(forward[0].body)), 1, 0.0)
    assert again.id != forward[0].id


def test_failure_and_stuck_rates_give_those_shares():
    fates = [t.fate for t in new_tasks(SimConfig(seed=1, failure_rate=0.3, stuck_rate=0.1),
                                       2000)]
    assert fates.count(Fate.FAIL) / 2000 == pytest.approx(0.3, abs=0.04)
    assert fates.count(Fate.STUCK) / 2000 == pytest.approx(0.1, abs=0.03)


def test_latency_is_lognormal_with_the_given_median_and_spread():
    latencies = [t.latency for t in new_tasks(SimConfig(latency_median=2.0, latency_sigma=0.5),
                                              2000)]
    assert statistics.median(latencies) == pytest.approx(2.0, rel=0.08)
    assert statistics.stdev(math.log(x) for x in latencies) == pytest.approx(0.5, rel=0.08)


def test_zero_median_finishes_tasks_at_once():
    assert {t.latency for t in new_tasks(SimConfig(latency_sigma=1.0), 5)} == {0.0}


# Rate limit and counters


def test_token_bucket_admits_rate_per_second_after_a_one_second_burst():
    bucket = TokenBucket(2.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0, 0, 1]
    assert bucket.take(0.5) == 0
    assert bucket.take(0.5) == 1


def test_slow_bucket_announces_the_whole_wait():
    bucket = TokenBucket(0.25, now=0.0)
    assert bucket.take(0.0) == 0
    assert bucket.take(0.0) == 4


def test_counters_snapshot_shape():
    counters = Counters()
    assert counters.task_created("a") == 0
    assert counters.task_created("a") == 1
    counters.task_created("b")
    counters.response(200)
    counters.fault("429_random")
    snapshot = counters.snapshot()
    assert snapshot["tasks_by_hash"] == {"a": 2, "b": 1}
    assert (snapshot["tasks_created"], snapshot["duplicates"]) == (3, 1)
    assert (snapshot["rate_limited"], snapshot["responses"]) == (1, {"200": 1})
    assert list(snapshot["faults"]) == list(FAULT_KINDS)


# Knob checks


@pytest.mark.parametrize("knobs", [
    {"failure_rate": 1.5}, {"p429": -0.1}, {"latency_median": -1}, {"rps": 0},
    {"quota": 1.5}, {"seed": "1"}, {"retry_after": True}, {"models": ()},
    {"failure_rate": 0.6, "stuck_rate": 0.5}, {"p5xx_submit_after": 0.5, "pdrop_submit": 0.6},
])
def test_bad_knobs_are_refused(knobs):
    with pytest.raises(ConfigError):
        SimConfig(**knobs)


def test_from_mapping_takes_lists_and_refuses_unknown_keys():
    assert SimConfig.from_mapping({"models": ["a", "b"]}).models == ("a", "b")
    with pytest.raises(ConfigError, match="bogus"):
        SimConfig.from_mapping({"bogus": 1})


def test_api_key_stays_out_of_repr():
    assert "sk-secret" not in repr(SimConfig(api_key="sk-secret"))


# Command line


def test_help_documents_every_knob():
    result = CliRunner().invoke(main, ["sim", "--help"])
    assert result.exit_code == 0
    options = {p.name: p for p in sim_command.params}
    for knob in dataclasses.fields(SimConfig):
        assert f"--{knob.name.replace('_', '-')}" in result.output
        assert options[knob.name].help
    assert "--host" in result.output and "--port" in result.output


def test_flags_give_back_the_config():
    config = SimConfig(seed=7, api_key="sk-k", models=("gpt-5.4", "kimi-k2.6"),
                       latency_median=0.25, latency_sigma=1.5, failure_rate=0.1,
                       stuck_rate=0.05, p429=0.2, retry_after=3, rps=12.5, p5xx_get=0.01,
                       p5xx_submit_before=0.02, p5xx_submit_after=0.03, pdrop_submit=0.04,
                       empty_result_polls=2, quota=100, expire_after=60.0)
    context = sim_command.make_context("sim", config_to_args(config))
    knobs = {k: v for k, v in context.params.items() if k not in ("host", "port")}
    assert config_from_options(knobs) == config


def test_impossible_knob_combination_is_a_clean_error():
    result = CliRunner().invoke(main, ["sim", "--failure-rate", "0.7", "--stuck-rate", "0.7"])
    assert result.exit_code == 1
    assert "failure_rate + stuck_rate" in result.output


def test_a_port_in_use_is_a_clean_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["sim", "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
