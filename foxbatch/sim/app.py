"""The simulated FoxAPI as a plain ASGI application.

Routes: POST /v1/llm/generations, GET /v1/tasks/{id}, GET /v1/configs/llm_generations_models
(foxapi.md §2, §3, §6), and, outside FoxAPI's paths and without auth, GET /_sim/stats and
POST /_sim/reset. Plain ASGI rather than a framework: the routes are few, every request is on
the hot path of foxbatch's benchmarks, and a dropped connection needs the raw `send` anyway.

Order of checks on an API request: auth (401), the --rps limit and random 429s, then random
5xx on GETs; a submit then parses (400) and validates (422) the body, checks the quota (402),
may fail before creating its task (5xx), creates it, and may fail after (5xx or a drop).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from foxbatch.errors import ConfigError
from foxbatch.models import canonical_json, request_hash
from foxbatch.sim.bucket import TokenBucket
from foxbatch.sim.config import DEFAULT_MODELS, SimConfig
from foxbatch.sim.replies import HttpError, Message, Reply, Send, send_reply, send_truncated
from foxbatch.sim.stats import Counters
from foxbatch.sim.tasks import Fate, Task, TaskTable, poll_document, task_document
from foxbatch.sim.validation import check_submit

Receive = Callable[[], Awaitable[Message]]
Scope = dict[str, Any]
Clock = Callable[[], float]
Handler = Callable[[Scope, Receive], Awaitable[Reply]]

SUBMIT_PATH = "/v1/llm/generations"
TASK_PATH_PREFIX = "/v1/tasks/"
MODELS_PATH = "/v1/configs/llm_generations_models"
SIM_PATH_PREFIX = "/_sim/"
STATS_PATH = SIM_PATH_PREFIX + "stats"
RESET_PATH = SIM_PATH_PREFIX + "reset"
SERVER_ERRORS = ((500, "simulated internal server error"),
                 (503, "simulated upstream unavailable: no available channel"))


class Simulator:
    """The simulated FoxAPI. `app` is its ASGI application; `stats()` is what it saw.

    `clock` gives the current time in seconds (default `time.time`); tests pass a hand-moved
    clock so that latency, expiry and the rps limit need no sleeping.
    """

    def __init__(self, config: SimConfig | None = None, *, clock: Clock = time.time):
        self._clock = clock
        self._config = config or SimConfig()
        self._routes: dict[str, tuple[str, Handler]] = {
            SUBMIT_PATH: ("POST", self._submit),
            MODELS_PATH: ("GET", self._list_models),
            STATS_PATH: ("GET", self._serve_stats),
            RESET_PATH: ("POST", self._serve_reset),
        }
        self.reset()

    @property
    def config(self) -> SimConfig:
        """The knobs in force."""
        return self._config

    def reset(self, config: SimConfig | None = None) -> None:
        """Forget every task and count and re-seed, switching to `config` if given."""
        self._config = config or self._config
        self._tasks = TaskTable(self._config)
        self._counters = Counters()
        self._rng = random.Random(self._config.seed)
        rps = self._config.rps
        self._bucket = TokenBucket(rps, self._clock()) if rps is not None else None

    def stats(self) -> dict[str, Any]:
        """Counts of what the simulator saw (shape: see `foxbatch.sim.stats`), plus the CPU
        seconds its process has used, so a benchmark can show the simulator was not its limit."""
        return {**self._counters.snapshot(), "process_cpu_seconds": time.process_time()}

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 application (HTTP only; it needs no lifespan events)."""
        if scope["type"] != "http":
            return
        try:
            reply = await self._dispatch(scope, receive)
        except HttpError as exc:
            reply = exc.reply()
        if not scope["path"].startswith(SIM_PATH_PREFIX):
            self._counters.response("dropped" if reply.drop else reply.status)
        if reply.drop:
            await send_truncated(send, reply)
        else:
            await send_reply(send, reply)

    async def _dispatch(self, scope: Scope, receive: Receive) -> Reply:
        path = scope["path"]
        route = ("GET", self._poll) if path.startswith(TASK_PATH_PREFIX) else self._routes.get(path)
        if route is None:
            raise HttpError(404, f"no such endpoint: {path}", code="not_found")
        method, handler = route
        if scope["method"] != method:
            raise HttpError(405, f"{path} answers {method} only", code="method_not_allowed")
        return await handler(scope, receive)

    # FoxAPI endpoints

    async def _submit(self, scope: Scope, receive: Receive) -> Reply:
        self._admit(scope, "submits")
        body = check_submit(_parse_json(await _read_body(receive)), self._config.models)
        self._check_quota()
        if self._chance(self._config.p5xx_submit_before):
            raise self._server_error("5xx_submit_before")
        task = self._create_task(body)
        reply = Reply(200, task_document(task, "pending", 0))
        return self._fault_after_create(reply)

    async def _poll(self, scope: Scope, receive: Receive) -> Reply:
        self._admit(scope, "polls")
        now = self._clock()
        task = self._live_task(scope["path"][len(TASK_PATH_PREFIX):], now)
        document, withheld = poll_document(task, now)
        if withheld:
            self._counters.fault("empty_results")
        return Reply(200, document)

    async def _list_models(self, scope: Scope, receive: Receive) -> Reply:
        self._admit(scope, "model_lists")
        data = [{"id": model, "object": "model", "capabilities": list(DEFAULT_MODELS.get(
            model, ("text",)))} for model in self._config.offered_models()]
        return Reply(200, {"object": "list", "data": data})

    # Simulator endpoints

    async def _serve_stats(self, scope: Scope, receive: Receive) -> Reply:
        return Reply(200, self.stats())

    async def _serve_reset(self, scope: Scope, receive: Receive) -> Reply:
        """Reset; a JSON object body changes those knobs (over the ones in force) first."""
        raw = await _read_body(receive)
        changes = _parse_json(raw) if raw.strip() else {}
        if not isinstance(changes, dict):
            raise HttpError(400, "the reset body must be a JSON object", code="invalid_json")
        try:
            self.reset(SimConfig.from_mapping(
                {**dataclasses.asdict(self._config), **changes}))
        except (ConfigError, TypeError) as exc:
            raise HttpError(400, str(exc), code="invalid_param") from None
        return Reply(200, {"reset": True})

    # Steps

    def _admit(self, scope: Scope, kind: str) -> None:
        """Count an API request of `kind`, then refuse it as FoxAPI would before reading it:
        a bad key, the rate limits, and on a GET a random server error."""
        self._counters.request(kind)
        self._check_key(_header(scope, b"authorization"))
        if self._bucket is not None:
            wait = self._bucket.take(self._clock())
            if wait:
                self._counters.fault("429_rps")
                raise HttpError(429, f"rate limit of {self._config.rps:g} requests/s exceeded",
                                code="rate_limit_exceeded", retry_after=wait)
        if self._chance(self._config.p429):
            self._counters.fault("429_random")
            raise HttpError(429, "too many requests (simulated)", code="rate_limit_exceeded",
                            retry_after=self._config.retry_after)
        if scope["method"] == "GET" and self._chance(self._config.p5xx_get):
            raise self._server_error("5xx_get")

    def _check_key(self, authorization: bytes | None) -> None:
        scheme, _, token = (authorization or b"").partition(b" ")
        expected = self._config.api_key
        if expected is not None:
            valid = token == expected.encode("utf-8")
        else:
            valid = token.startswith(b"sk-") and len(token) > 3
        if scheme.lower() != b"bearer" or not valid:
            # Never echo the key: the message must be safe to log.
            raise HttpError(401, "invalid or missing API key", code="invalid_api_key")

    def _check_quota(self) -> None:
        quota = self._config.quota
        if quota is not None and self._counters.total_tasks() >= quota:
            self._counters.fault("quota_exceeded")
            raise HttpError(402, f"insufficient balance: the simulated quota of {quota} tasks "
                            "is used up", code="insufficient_quota")

    def _create_task(self, body: dict[str, Any]) -> Task:
        digest = request_hash(canonical_json(body))
        occurrence = self._counters.task_created(digest)
        task = self._tasks.create(body, digest, occurrence, self._clock())
        if task.fate is Fate.FAIL:
            self._counters.fault("task_failed")
        elif task.fate is Fate.STUCK:
            self._counters.fault("task_stuck")
        return task

    def _fault_after_create(self, reply: Reply) -> Reply:
        """One draw decides between a 5xx, a dropped connection and the real answer."""
        p5xx, pdrop = self._config.p5xx_submit_after, self._config.pdrop_submit
        if p5xx + pdrop == 0:
            return reply
        draw = self._rng.random()
        if draw < p5xx:
            raise self._server_error("5xx_submit_after")
        if draw < p5xx + pdrop:
            self._counters.fault("drop_submit")
            return dataclasses.replace(reply, drop=True)
        return reply

    def _live_task(self, task_id: str, now: float) -> Task:
        """The task, unless unknown or expired (404)."""
        task = self._tasks.get(task_id)
        expire_after = self._config.expire_after
        if task is not None and expire_after is not None and now >= (
                task.finished_at + expire_after):
            self._tasks.forget(task_id)
            self._counters.fault("expired")
            task = None
        if task is None:
            raise HttpError(404, f"task {task_id} not found", code="task_not_found")
        return task

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    def _server_error(self, kind: str) -> HttpError:
        self._counters.fault(kind)
        status, message = self._rng.choice(SERVER_ERRORS)
        return HttpError(status, message, code="server_error" if status == 500
                         else "service_unavailable")


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise HttpError(400, "the request body is not valid JSON", code="invalid_json") from None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value
    return None
