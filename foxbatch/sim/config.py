"""The simulator's knobs: one frozen `SimConfig`, checked when it is built."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foxbatch.errors import ConfigError

# The models FoxAPI lists by default (foxapi.md §2, §6) and what each one accepts.
DEFAULT_MODELS: Mapping[str, tuple[str, ...]] = {
    "claude-opus-4-7": ("text", "vision", "file"),
    "claude-opus-4-6": ("text", "vision", "file"),
    "claude-sonnet-4-6": ("text", "vision", "file"),
    "gemini-2.5-pro": ("text", "vision", "video", "audio", "file"),
    "gemini-3-pro-preview": ("text", "vision", "video", "audio", "file"),
    "gemini-3.1-pro-preview": ("text", "vision", "video", "audio", "file"),
    "gpt-5.4": ("text", "vision", "file"),
    "gpt-5.5": ("text", "vision", "file"),
    "kimi-k2.6": ("text",),
    "nemotron-3-nano-omni": ("text", "vision", "video", "audio"),
}

_RATES = ("failure_rate", "stuck_rate", "p429", "p5xx_get", "p5xx_submit_before",
          "p5xx_submit_after", "pdrop_submit")
_NON_NEGATIVE = ("latency_median", "latency_sigma", "retry_after", "empty_result_polls",
                 "quota", "expire_after", "rps")
_INTEGERS = ("retry_after", "empty_result_polls", "quota")
_OPTIONAL = ("rps", "quota", "expire_after")


@dataclass(frozen=True)
class SimConfig:
    """How the simulated FoxAPI behaves. Every probability is per request (or per task) in [0, 1].

    Attributes:
        seed: Seeds every random choice. Task fates (latency, failure, stuck) depend only on the
            seed, the request hash and how many times that request was submitted before, so they
            do not depend on request order; per-request faults (429, 5xx, drops) come from one
            seeded generator, reproducible for a sequential client.
        api_key: When set, only `Authorization: Bearer <api_key>` is accepted; otherwise any
            `Bearer sk-...` key is. Kept out of `repr`.
        models: When set, the only models offered by GET /v1/configs/llm_generations_models;
            a submit naming another model answers 422 `model_not_supported`. When None, every
            model is accepted and the list is `DEFAULT_MODELS`.
        latency_median: Median seconds from task creation to its end (lognormal). 0 finishes
            every task at once (its first poll sees it finished).
        latency_sigma: Spread of the lognormal latency: the standard deviation of its logarithm
            (0 makes every task take exactly `latency_median`; 1 gives a long tail).
        failure_rate: Share of tasks that end `failed` with a `task_error`.
        stuck_rate: Share of tasks that stay `processing` for ever.
        p429: Probability that an API request answers 429 `rate_limit_error` with a
            `Retry-After` of `retry_after` seconds (a 429 on submit creates no task).
        retry_after: Seconds announced in the `Retry-After` header of random 429s.
        rps: When set, a real limit of this many API requests per second (token bucket, one
            second of burst); requests beyond it answer 429 with the `Retry-After` (whole
            seconds, at least 1) after which a request would be admitted.
        p5xx_get: Probability that a GET (poll or model list) answers 500 or 503.
        p5xx_submit_before: Probability that a submit answers 500 or 503 without creating a task.
        p5xx_submit_after: Probability that a submit creates its task, then answers 500 or 503.
        pdrop_submit: Probability that a submit creates its task, then breaks the connection
            mid-response (headers with a Content-Length, half the body, then the connection is
            closed). `p5xx_submit_after + pdrop_submit` must not exceed 1.
        empty_result_polls: Each completed task first answers this many polls with
            `status: completed` but `results: null`, as FoxAPI has been seen to do.
        quota: When set, the number of tasks the account can pay for; once that many tasks
            exist, submits answer 402 `insufficient_quota`.
        expire_after: When set, seconds after which a finished (completed or failed) task is
            forgotten: polls then answer 404.
    """

    seed: int = 0
    api_key: str | None = field(default=None, repr=False)
    models: tuple[str, ...] | None = None
    latency_median: float = 0.0
    latency_sigma: float = 0.0
    failure_rate: float = 0.0
    stuck_rate: float = 0.0
    p429: float = 0.0
    retry_after: int = 1
    rps: float | None = None
    p5xx_get: float = 0.0
    p5xx_submit_before: float = 0.0
    p5xx_submit_after: float = 0.0
    pdrop_submit: float = 0.0
    empty_result_polls: int = 0
    quota: int | None = None
    expire_after: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        for name in _INTEGERS + _NON_NEGATIVE + _RATES:
            value = getattr(self, name)
            if not (value is None and name in _OPTIONAL):
                _check_number(name, value, integer=name in _INTEGERS,
                              upper=1.0 if name in _RATES else None)
        if self.rps == 0:
            raise ConfigError("rps must be more than 0")
        if self.failure_rate + self.stuck_rate > 1:
            raise ConfigError("failure_rate + stuck_rate must not exceed 1")
        if self.p5xx_submit_after + self.pdrop_submit > 1:
            raise ConfigError("p5xx_submit_after + pdrop_submit must not exceed 1")
        if self.models is not None and (
                not self.models or not all(isinstance(m, str) and m for m in self.models)):
            raise ConfigError("models, when given, must name at least one model")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SimConfig:
        """Build a config from JSON-like values (lists become tuples); unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown simulator settings: {', '.join(unknown)}")
        converted = dict(values)
        if converted.get("models") is not None:
            converted["models"] = tuple(converted["models"])
        return cls(**converted)

    def offered_models(self) -> tuple[str, ...]:
        """The model ids GET /v1/configs/llm_generations_models lists."""
        return self.models if self.models is not None else tuple(DEFAULT_MODELS)


def _check_number(name: str, value: object, *, integer: bool, upper: float | None) -> None:
    """Refuse a value that is not a number (an integer if `integer`) in [0, `upper`]."""
    kind = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{name} must be {'an integer' if integer else 'a number'}, "
                          f"got {value!r}")
    if value < 0 or (upper is not None and value > upper):
        bounds = f"in [0, {upper:g}]" if upper is not None else ">= 0"
        raise ConfigError(f"{name} must be {bounds}, got {value}")
