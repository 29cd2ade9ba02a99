"""The simulator against foxapi.md, and every knob: each test runs twice, in-process through
httpx.ASGITransport (with a hand-moved clock) and over real HTTP against a `foxbatch sim` child
process (one per session, reconfigured through POST /_sim/reset before each test)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from foxbatch.models import RequestSpec, request_hash
from foxbatch.sim import DEFAULT_MODELS, SimConfig, Simulator, expected_completion
from foxbatch.sim.server import serve_in_subprocess, serve_in_thread

AUTH = {"Authorization": "Bearer sk-test"}
TASK_ID = re.compile(r"^task-llmrouter-\d{10}-[a-z0-9]{8}$")
SUBMIT = "/v1/llm/generations"
MODELS = "/v1/configs/llm_generations_models"
START = 1_776_874_481.0


def text_body(prompt: str = "Say hello", **fields: Any) -> dict[str, Any]:
    """A text-form body as foxbatch sends it."""
    return RequestSpec(model=fields.pop("model", "gpt-5.4"), prompt=prompt, max_tokens=64,
                       **fields).to_body()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class InProcess:
    """The simulator app mounted in the test's event loop; time moves only when told."""

    exact_time = True

    def __init__(self) -> None:
        self.clock = Clock()
        self.sim = Simulator(clock=self.clock)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.sim.app),
                                        base_url="http://sim", headers=AUTH)

    async def configure(self, **knobs: Any) -> None:
        """Forget everything and switch to these knobs (defaults for the rest)."""
        self.sim.reset(SimConfig(**knobs))

    async def stats(self) -> dict[str, Any]:
        """The simulator's counters."""
        return self.sim.stats()

    async def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.clock.now += seconds


class OverHttp:
    """A real `foxbatch sim` process; time is real."""

    exact_time = False

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, headers=AUTH)

    async def configure(self, **knobs: Any) -> None:
        """Forget everything and switch to these knobs (defaults for the rest)."""
        config = dataclasses.asdict(SimConfig(**knobs))
        (await self.client.post("/_sim/reset", json=config)).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        """The simulator's counters."""
        return (await self.client.get("/_sim/stats")).json()

    async def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        await asyncio.sleep(seconds)


@pytest.fixture(scope="session")
def sim_server() -> Iterator[str]:
    """One `foxbatch sim` child process for the session."""
    with serve_in_subprocess() as base_url:
        yield base_url


@pytest.fixture(params=["in_process", "http"])
async def fox(request) -> AsyncIterator[InProcess | OverHttp]:
    """A fresh simulator with default knobs, reached in-process or over real HTTP."""
    harness = InProcess() if request.param == "in_process" else OverHttp(
        request.getfixturevalue("sim_server"))
    await harness.configure()
    yield harness
    await harness.client.aclose()


async def submit(fox: InProcess | OverHttp, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a body that must be accepted; return the task object."""
    response = await fox.client.post(SUBMIT, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def poll(fox: InProcess | OverHttp, task_id: str) -> dict[str, Any]:
    """Poll a task that must exist; return the task object."""
    response = await fox.client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def without_key(fox: InProcess | OverHttp, method: str, path: str, *,
                      headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    """Send a request without the harness's API key (with `headers` only)."""
    request = fox.client.build_request(method, path, **kwargs)
    del request.headers["Authorization"]
    request.headers.update(headers or {})
    return await fox.client.send(request)


def assert_error(response: httpx.Response, status: int, error_type: str,
                 code: str | None = None) -> dict[str, Any]:
    """The response is a FoxAPI error body of that status, type (and code)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == error_type
    if code is not None:
        assert error["code"] == code
    return error


# Submit


async def test_text_submit_answers_a_pending_task_object(fox):
    task = await submit(fox, text_body())
    assert TASK_ID.match(task["id"])
    assert task == {"id": task["id"], "object": "llm.generation.task", "type": "llm",
                    "model": "gpt-5.4", "status": "pending", "progress": 0,
                    "created": task["created"], "stream": None, "results": None, "error": None}
    assert int(task["id"].split("-")[2]) == task["created"]


async def test_messages_form_is_accepted_and_answered(fox):
    body = RequestSpec(model="claude-opus-4-7", max_tokens=100, messages=(
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Describe"},
                                     {"type": "image_url", "image_url": {"url": "http://x"}}]},
    )).to_body()
    task = await poll(fox, (await submit(fox, body))["id"])
    assert task["results"][0]["choices"][0]["message"]["content"] == expected_completion(body)


# Poll


async def test_completed_task_carries_a_full_chat_completion(fox):
    body = text_body("Summarise the plot of Hamlet", system_prompt="You are terse.")
    created = await submit(fox, body)
    task = await poll(fox, created["id"])
    assert (task["status"], task["progress"], task["error"]) == ("completed", 100, None)
    assert task["usage"] == {"credits_reserved": 5, "user_group": "default"}
    completion = task["results"][0]
    assert completion["object"] == "chat.completion" and completion["model"] == "gpt-5.4"
    assert isinstance(completion["id"], str) and isinstance(completion["created"], int)
    choice = completion["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected_completion(body)}
    assert choice["finish_reason"] == "stop"
    usage = completion["usage"]
    prompt_chars = len(body["prompt"]) + len(body["system_prompt"])
    assert usage["prompt_tokens"] == pytest.approx(prompt_chars / 4, abs=2)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_task_goes_pending_processing_completed(fox):
    await fox.configure(latency_median=0.6)
    task_id = (await submit(fox, text_body()))["id"]
    seen: list[tuple[str, int]] = []
    for _ in range(40):
        task = await poll(fox, task_id)
        seen.append((task["status"], task["progress"]))
        if task["status"] == "completed":
            break
        assert task["results"] is None and 0 <= task["progress"] < 100
        await fox.advance(0.15)
    order = ["pending", "processing", "completed"]
    assert seen[0][0] != "completed" and seen[-1] == ("completed", 100)
    assert [order.index(s) for s, _ in seen] == sorted(order.index(s) for s, _ in seen)
    assert [p for _, p in seen] == sorted(p for _, p in seen)
    if fox.exact_time:
        assert seen[:3] == [("pending", 0), ("processing", 25), ("processing", 50)]


async def test_unknown_task_is_404(fox):
    response = await fox.client.get("/v1/tasks/task-llmrouter-1776874481-zzzzzzzz")
    assert_error(response, 404, "not_found")


# Model list


async def test_model_list_offers_the_usual_models(fox):
    response = await fox.client.get(MODELS)
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == list(DEFAULT_MODELS)
    assert all(m["object"] == "model" and "text" in m["capabilities"] for m in listing["data"])


async def test_configured_models_are_listed_and_others_refused(fox):
    await fox.configure(models=("gpt-5.4", "kimi-k2.6"))
    listing = (await fox.client.get(MODELS)).json()
    assert [m["id"] for m in listing["data"]] == ["gpt-5.4", "kimi-k2.6"]
    await submit(fox, text_body(model="kimi-k2.6"))
    refused = await fox.client.post(SUBMIT, json=text_body(model="gemini-2.5-pro"))
    assert_error(refused, 422, "invalid_request_error", "model_not_supported")


# Validation (foxapi.md §2)

LONG_PROMPT = "x" * 100_001
REFUSED = {
    "no model": ({"prompt": "hi"}, "invalid_param"),
    "empty model": ({"model": " ", "prompt": "hi"}, "invalid_param"),
    "no prompt": ({"model": "gpt-5.4"}, "invalid_param"),
    "blank prompt": ({"model": "gpt-5.4", "prompt": "  \n"}, "invalid_param"),
    "prompt not a string": ({"model": "gpt-5.4", "prompt": 7}, "invalid_param"),
    "prompt too long": ({"model": "gpt-5.4", "prompt": LONG_PROMPT}, "invalid_param"),
    "system prompt too long": ({"model": "gpt-5.4", "prompt": "hi",
                                "system_prompt": "s" * 10_001}, "invalid_param"),
    "temperature below 0": ({"model": "gpt-5.4", "prompt": "hi", "temperature": -0.1},
                            "invalid_param"),
    "temperature above 2": ({"model": "gpt-5.4", "prompt": "hi", "temperature": 2.01},
                            "invalid_param"),
    "max_tokens 0": ({"model": "kimi-k2.6", "prompt": "hi", "max_tokens": 0}, "invalid_param"),
    "max_tokens not int": ({"model": "kimi-k2.6", "prompt": "hi", "max_tokens": 1.5},
                           "invalid_param"),
    "claude without max_tokens": ({"model": "claude-sonnet-4-6", "prompt": "hi"},
                                  "model_rule_violation"),
    "opus 4.6 without max_tokens": ({"model": "claude-opus-4-6", "prompt": "hi"},
                                    "model_rule_violation"),
    "gpt-5.5 below 16 tokens": ({"model": "gpt-5.5", "prompt": "hi", "max_tokens": 15},
                                "model_rule_violation"),
    "empty messages": ({"model": "gpt-5.4", "messages": []}, "invalid_param"),
    "message without role": ({"model": "gpt-5.4", "messages": [{"content": "hi"}]},
                             "invalid_param"),
    "unknown block type": ({"model": "gpt-5.4", "messages": [
        {"role": "user", "content": [{"type": "hologram"}]}]}, "unsupported_content_type"),
    "sync true": ({"model": "gpt-5.4", "prompt": "hi", "sync": True},
                  "unsupported_advanced_options"),
}
ACCEPTED = {
    "prompt at the limit": {"model": "gpt-5.4", "prompt": "x" * 100_000},
    "system prompt at the limit": {"model": "gpt-5.4", "prompt": "hi",
                                   "system_prompt": "s" * 10_000},
    "temperature 0": {"model": "gpt-5.4", "prompt": "hi", "temperature": 0},
    "temperature 2": {"model": "gpt-5.4", "prompt": "hi", "temperature": 2},
    "gpt-5.4 with 16 tokens": {"model": "gpt-5.4", "prompt": "hi", "max_tokens": 16},
    "claude with max_tokens": {"model": "claude-opus-4-7", "prompt": "hi", "max_tokens": 1},
    "any model without a list": {"model": "some-new-model", "prompt": "hi"},
}


@pytest.mark.parametrize("body,code", REFUSED.values(), ids=REFUSED.keys())
async def test_invalid_bodies_are_422(fox, body, code):
    response = await fox.client.post(SUBMIT, json=body)
    assert_error(response, 422, "invalid_request_error", code)
    assert (await fox.stats())["tasks_created"] == 0


@pytest.mark.parametrize("body", ACCEPTED.values(), ids=ACCEPTED.keys())
async def test_bodies_at_the_limits_are_accepted(fox, body):
    await submit(fox, body)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"'])
async def test_malformed_json_is_400(fox, raw):
    response = await fox.client.post(SUBMIT, content=raw,
                                     headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_request_error")


# Auth


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer abc", "Basic sk-test",
                                           "Bearer sk-"])
@pytest.mark.parametrize("method,path", [("POST", SUBMIT), ("GET", "/v1/tasks/x"),
                                         ("GET", MODELS)])
async def test_requests_without_a_valid_key_are_401(fox, authorization, method, path):
    headers = {"Authorization": authorization} if authorization else {}
    response = await without_key(fox, method, path, json=text_body(), headers=headers)
    assert_error(response, 401, "authentication_error")


async def test_configured_api_key_is_the_only_one_accepted(fox):
    await fox.configure(api_key="sk-the-one")
    refused = await fox.client.post(SUBMIT, json=text_body())
    assert "sk-test" not in assert_error(refused, 401, "authentication_error")["message"]
    accepted = await fox.client.post(SUBMIT, json=text_body(),
                                     headers={"Authorization": "Bearer sk-the-one"})
    assert accepted.status_code == 200


# Answers and counters


async def test_answers_are_deterministic_and_row_specific(fox):
    bodies = [text_body("row 1"), text_body("row 2"), text_body("row 1", system_prompt="S"),
              text_body("row 1", model="kimi-k2.6"), text_body("row 1")]
    answers = []
    for body in bodies:
        task = await poll(fox, (await submit(fox, body))["id"])
        answers.append(task["results"][0]["choices"][0]["message"]["content"])
    assert answers == [expected_completion(body) for body in bodies]
    assert len(set(answers[:4])) == 4 and answers[4] == answers[0]


async def test_stats_count_tasks_per_request_hash_and_duplicates(fox):
    spec = RequestSpec(model="gpt-5.4", prompt="count me", max_tokens=32)
    other = text_body("another")
    for body in (spec.to_body(), spec.to_body(), spec.to_body(), other):
        await submit(fox, body)
    task_id = (await submit(fox, other))["id"]
    await poll(fox, task_id)
    await fox.client.get(MODELS)
    stats = await fox.stats()
    assert stats["tasks_by_hash"] == {request_hash(spec.canonical_json()): 3,
                                      request_hash(RequestSpec.from_body(other)
                                                   .canonical_json()): 2}
    assert (stats["submits"], stats["polls"], stats["model_lists"]) == (5, 1, 1)
    assert (stats["tasks_created"], stats["duplicates"]) == (5, 3)
    assert stats["responses"] == {"200": 7}
    assert set(stats["faults"].values()) == {0}


async def test_stats_need_no_auth_and_reset_forgets_everything(fox):
    task_id = (await submit(fox, text_body()))["id"]
    assert (await without_key(fox, "GET", "/_sim/stats")).json()["tasks_created"] == 1
    assert (await without_key(fox, "POST", "/_sim/reset")).json() == {"reset": True}
    assert (await fox.stats())["tasks_created"] == 0
    assert_error(await fox.client.get(f"/v1/tasks/{task_id}"), 404, "not_found")
    refused = await without_key(fox, "POST", "/_sim/reset", json={"no_such_knob": 1})
    assert_error(refused, 400, "invalid_request_error", "invalid_param")


async def test_unknown_paths_are_404_and_wrong_methods_405(fox):
    assert_error(await fox.client.get("/v1/nothing"), 404, "not_found")
    assert_error(await fox.client.get(SUBMIT), 405, "invalid_request_error")


# Knobs


async def test_seed_makes_ids_and_fates_reproducible(fox):
    async def run(seed: int) -> list[tuple[str, str]]:
        await fox.configure(seed=seed, failure_rate=0.5)
        tasks = [await submit(fox, text_body(f"row {i}")) for i in range(8)]
        return [(t["id"][-8:], (await poll(fox, t["id"]))["status"]) for t in tasks]

    first = await run(11)
    assert await run(11) == first
    assert {status for _, status in first} == {"completed", "failed"}
    assert [suffix for suffix, _ in await run(12)] != [suffix for suffix, _ in first]


async def test_failure_rate_fails_tasks_with_a_task_error(fox):
    await fox.configure(failure_rate=1.0)
    task = await poll(fox, (await submit(fox, text_body()))["id"])
    assert (task["status"], task["results"]) == ("failed", None)
    assert task["error"]["type"] == "task_error"
    assert task["error"]["code"] in {"generation_failed", "task_failed"}
    assert task["error"]["message"]
    assert (await fox.stats())["faults"]["task_failed"] == 1


async def test_stuck_tasks_never_finish(fox):
    await fox.configure(stuck_rate=1.0)
    task_id = (await submit(fox, text_body()))["id"]
    await fox.advance(0.2)
    task = await poll(fox, task_id)
    assert task["status"] == "processing" and task["progress"] <= 99
    if fox.exact_time:
        await fox.advance(86_400)
        assert (await poll(fox, task_id))["status"] == "processing"
    assert (await fox.stats())["faults"]["task_stuck"] == 1


async def test_p429_answers_retry_after_and_creates_nothing(fox):
    await fox.configure(p429=1.0, retry_after=7)
    for response in (await fox.client.post(SUBMIT, json=text_body()),
                     await fox.client.get("/v1/tasks/x"), await fox.client.get(MODELS)):
        assert_error(response, 429, "rate_limit_error")
        assert response.headers["Retry-After"] == "7"
    stats = await fox.stats()
    assert (stats["tasks_created"], stats["rate_limited"]) == (0, 3)
    assert stats["faults"]["429_random"] == 3


async def test_rps_limit_answers_429_until_the_bucket_refills(fox):
    await fox.configure(rps=1.0)
    responses = [await fox.client.get(MODELS) for _ in range(4)]
    assert responses[0].status_code == 200
    limited = [r for r in responses if r.status_code == 429]
    assert limited and all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    await fox.advance(int(limited[-1].headers["Retry-After"]) + 0.1)
    assert (await fox.client.get(MODELS)).status_code == 200
    assert (await fox.stats())["faults"]["429_rps"] == len(limited)


async def test_p5xx_get_fails_polls_and_model_lists(fox):
    await fox.configure(p5xx_get=1.0)
    for response in (await fox.client.get("/v1/tasks/x"), await fox.client.get(MODELS)):
        assert response.status_code in (500, 503)
        assert_error(response, response.status_code,
                     "server_error" if response.status_code == 500 else "service_unavailable_error")
    assert (await fox.stats())["faults"]["5xx_get"] == 2


async def test_p5xx_submit_before_creates_no_task(fox):
    await fox.configure(p5xx_submit_before=1.0)
    response = await fox.client.post(SUBMIT, json=text_body())
    assert response.status_code in (500, 503) and "error" in response.json()
    stats = await fox.stats()
    assert (stats["tasks_created"], stats["faults"]["5xx_submit_before"]) == (0, 1)


async def test_p5xx_submit_after_creates_the_task_anyway(fox):
    await fox.configure(p5xx_submit_after=1.0)
    for _ in range(2):
        response = await fox.client.post(SUBMIT, json=text_body())
        assert response.status_code in (500, 503) and "error" in response.json()
    stats = await fox.stats()
    assert (stats["tasks_created"], stats["duplicates"]) == (2, 1)
    assert stats["faults"]["5xx_submit_after"] == 2


async def test_pdrop_submit_breaks_the_connection_after_creating_the_task(fox):
    await fox.configure(pdrop_submit=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        await fox.client.post(SUBMIT, json=text_body())
    await fox.configure(pdrop_submit=0.5, seed=3)
    outcomes = []
    for i in range(6):
        try:
            outcomes.append((await fox.client.post(SUBMIT, json=text_body(f"{i}"))).status_code)
        except httpx.RemoteProtocolError:
            outcomes.append("dropped")
    stats = await fox.stats()
    assert "dropped" in outcomes and 200 in outcomes
    assert stats["tasks_created"] == 6
    assert stats["faults"]["drop_submit"] == stats["responses"]["dropped"] == outcomes.count(
        "dropped")


async def test_empty_result_polls_come_before_the_results(fox):
    await fox.configure(empty_result_polls=2)
    task_id = (await submit(fox, text_body()))["id"]
    polls = [await poll(fox, task_id) for _ in range(3)]
    assert [(p["status"], p["results"]) for p in polls[:2]] == [("completed", None)] * 2
    assert polls[2]["status"] == "completed" and polls[2]["results"]
    assert (await fox.stats())["faults"]["empty_results"] == 2


async def test_quota_answers_402_once_used_up(fox):
    await fox.configure(quota=2)
    await submit(fox, text_body("a"))
    await submit(fox, text_body("b"))
    refused = await fox.client.post(SUBMIT, json=text_body("c"))
    assert_error(refused, 402, "insufficient_quota", "insufficient_quota")
    stats = await fox.stats()
    assert (stats["tasks_created"], stats["faults"]["quota_exceeded"]) == (2, 1)


async def test_finished_tasks_expire(fox):
    await fox.configure(expire_after=1.0)
    task_id = (await submit(fox, text_body()))["id"]
    assert (await poll(fox, task_id))["status"] == "completed"
    await fox.advance(1.3)
    assert_error(await fox.client.get(f"/v1/tasks/{task_id}"), 404, "not_found")
    assert (await fox.stats())["faults"]["expired"] == 1


async def test_latency_is_lognormal_around_the_median(fox):
    # With seed 4 these six tasks take 0.46, 0.63, 0.64, 0.75, 0.84 and 1.57 seconds.
    await fox.configure(seed=4, latency_median=0.8, latency_sigma=0.3)
    ids = [(await submit(fox, text_body(f"row {i}")))["id"] for i in range(6)]

    async def completed() -> int:
        return sum([(await poll(fox, i))["status"] == "completed" for i in ids])

    assert await completed() == 0
    if fox.exact_time:
        await fox.advance(0.5)
        assert await completed() == 1
        await fox.advance(0.3)
        assert await completed() == 4
    await fox.advance(1.7)
    assert await completed() == 6


# Serving helpers


def test_serve_in_thread_serves_a_simulator_it_was_given():
    sim = Simulator(SimConfig(seed=1))
    with serve_in_thread(sim) as base_url:
        response = httpx.post(f"{base_url}{SUBMIT}", json=text_body(), headers=AUTH)
        assert response.status_code == 200
    assert sim.stats()["tasks_created"] == 1


def test_foxbatch_sim_applies_its_flags():
    config = SimConfig(api_key="sk-flag", models=("kimi-k2.6",), quota=1, seed=9)
    with serve_in_subprocess(config) as base_url, httpx.Client(base_url=base_url) as client:
        client.headers["Authorization"] = "Bearer sk-flag"
        assert client.post(SUBMIT, json=text_body(model="kimi-k2.6")).status_code == 200
        assert client.post(SUBMIT, json=text_body(model="kimi-k2.6")).status_code == 402
        assert client.post(SUBMIT, json=text_body(model="gpt-5.4")).status_code == 422
        assert client.get(MODELS, headers={"Authorization": "Bearer sk-x"}).status_code == 401
