"""Pure domain: row states, the request a row sends, its validation, retry back-off. No I/O."""

from __future__ import annotations

import enum
import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from foxbatch.errors import RowError

MAX_PROMPT_CHARS = 100_000
MAX_SYSTEM_CHARS = 10_000
MODELS_REQUIRING_MAX_TOKENS = frozenset({"claude-opus-4-6", "claude-opus-4-7", "claude-sonnet-4-6"})
MODELS_WITH_MIN_16_TOKENS = frozenset({"gpt-5.4", "gpt-5.5"})
MIN_TOKENS_GPT5 = 16
# orjson writes floats in this range (and zero) exactly as json.dumps does; outside it, json
# switches to exponent notation ("1e-05", "1e+16") and orjson does not.
_ORJSON_FLOAT_MIN = 1e-4
_ORJSON_FLOAT_MAX = 1e16


class RowStatus(enum.StrEnum):
    """The life of one input row in the store (see design.md, "Rows and their states")."""

    INVALID = "invalid"
    QUEUED = "queued"
    SUBMITTING = "submitting"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ALL_STATUSES: tuple[str, ...] = tuple(s.value for s in RowStatus)
TERMINAL_STATUSES = frozenset({"invalid", "succeeded", "failed", "cancelled"})
ACTIVE_STATUSES = frozenset({"queued", "submitting", "pending"})


class OnDoubt(enum.StrEnum):
    """What to do with a submission that may or may not have created a task."""

    RESUBMIT = "resubmit"
    HOLD = "hold"


IN_DOUBT_HELD_CODE = "in_doubt_held"
# Marks a row cancelled while its task was in flight: its result is still recorded, but a
# failure ends it `cancelled` instead of sending it again.
CANCEL_REQUESTED_CODE = "cancel_requested"


@dataclass(frozen=True)
class RequestSpec:
    """The body one row sends to POST /v1/llm/generations (text form or messages form)."""

    model: str
    prompt: str | None = None
    messages: tuple[Mapping[str, Any], ...] | None = None
    system_prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    reasoning: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        """The JSON body to send; foxbatch always asks for an asynchronous, non-streamed task."""
        return request_body(self.model, prompt=self.prompt, messages=self.messages,
                            system_prompt=self.system_prompt, max_tokens=self.max_tokens,
                            temperature=self.temperature, reasoning=self.reasoning,
                            extra=self.extra)

    def canonical_json(self) -> str:
        """The body as canonical JSON (sorted keys, no spaces): what `request_hash` hashes."""
        return canonical_json(self.to_body())

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RequestSpec:
        """Rebuild a spec from a stored body (the inverse of `to_body`)."""
        known = {"model", "prompt", "messages", "system_prompt", "max_tokens", "temperature",
                 "reasoning", "sync", "stream"}
        messages = body.get("messages")
        return cls(
            model=body["model"],
            prompt=body.get("prompt"),
            messages=tuple(messages) if messages is not None else None,
            system_prompt=body.get("system_prompt"),
            max_tokens=body.get("max_tokens"),
            temperature=body.get("temperature"),
            reasoning=body.get("reasoning"),
            extra={k: v for k, v in body.items() if k not in known},
        )


def request_body(model: str, *, prompt: str | None = None,
                 messages: Sequence[Mapping[str, Any]] | None = None,
                 system_prompt: str | None = None, max_tokens: int | None = None,
                 temperature: float | None = None, reasoning: bool | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The body of POST /v1/llm/generations (what `RequestSpec.to_body` returns), built without
    a spec: the messages form when `messages` is given, else the text form."""
    body: dict[str, Any] = {"model": model}
    if messages is not None:
        body["messages"] = [dict(m) for m in messages]
    else:
        body["prompt"] = prompt
        if system_prompt is not None:
            body["system_prompt"] = system_prompt
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    if reasoning is not None:
        body["reasoning"] = reasoning
    if extra:
        body.update(extra)
    body["sync"] = False
    body["stream"] = False
    return body


def canonical_json(value: Any) -> str:
    """Serialise `value` canonically: sorted keys, compact separators, UTF-8 kept as is.

    The definition is json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False);
    orjson writes the same bytes about six times faster for plain JSON values with no float in
    exponent range, so it is used for those.
    """
    if _orjson_writes_same(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError:  # e.g. a lone surrogate, which json.dumps lets through
            pass
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _orjson_writes_same(value: Any) -> bool:
    """False when orjson would write `value` differently from json.dumps: a float in exponent
    range, or a type json.dumps does not know. (Where orjson refuses what json.dumps writes,
    an int beyond 64 bits or a key that is not a string, canonical_json falls back to json.)"""
    kind = type(value)
    if kind is dict:
        items: Iterable[Any] = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        items = (value,)
    for item in items:
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float:
            if item != 0.0 and not _ORJSON_FLOAT_MIN <= abs(item) < _ORJSON_FLOAT_MAX:
                return False
        elif kind is dict or kind is list or kind is tuple:
            if not _orjson_writes_same(item):
                return False
        else:
            return False
    return True


def request_hash(body_json: str) -> str:
    """sha256 hex of a canonical request body."""
    return hashlib.sha256(body_json.encode("utf-8")).hexdigest()


def validate_request(spec: RequestSpec) -> None:
    """Raise RowError naming the field if FoxAPI would refuse `spec` (foxapi.md §2)."""
    _validate(spec.model, spec.prompt, spec.messages, spec.system_prompt, spec.max_tokens,
              spec.temperature)


def validate_body(body: Mapping[str, Any]) -> None:
    """`validate_request` for a body dict such as `request_body` returns."""
    _validate(body.get("model"), body.get("prompt"), body.get("messages"),
              body.get("system_prompt"), body.get("max_tokens"), body.get("temperature"))


def _validate(model: object, prompt: object, messages: Sequence[Mapping[str, Any]] | None,
              system_prompt: object, max_tokens: object, temperature: object) -> None:
    if not isinstance(model, str) or not model.strip():
        raise RowError("model is required", field="model")
    if messages is not None:
        _validate_messages(messages)
    else:
        _validate_prompt(prompt, system_prompt)
    _validate_max_tokens(model, max_tokens)
    _validate_temperature(temperature)


def _validate_prompt(prompt: object, system_prompt: object) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError("prompt is empty", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RowError(f"prompt has {len(prompt)} characters, more than {MAX_PROMPT_CHARS}",
                       field="prompt")
    if system_prompt is not None:
        if not isinstance(system_prompt, str):
            raise RowError("system_prompt must be a string", field="system_prompt")
        if len(system_prompt) > MAX_SYSTEM_CHARS:
            raise RowError(f"system_prompt has {len(system_prompt)} characters, more than "
                           f"{MAX_SYSTEM_CHARS}", field="system_prompt")


def _validate_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    if not messages:
        raise RowError("messages is empty", field="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise RowError(f"messages[{i}] needs a role and a content", field="messages")


def _validate_max_tokens(model: str, max_tokens: object) -> None:
    if max_tokens is None:
        if model in MODELS_REQUIRING_MAX_TOKENS:
            raise RowError(f"model {model} requires max_tokens", field="max_tokens")
        return
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise RowError(f"max_tokens must be an integer, got {max_tokens!r}", field="max_tokens")
    if max_tokens < 1:
        raise RowError(f"max_tokens must be >= 1, got {max_tokens}", field="max_tokens")
    if model in MODELS_WITH_MIN_16_TOKENS and max_tokens < MIN_TOKENS_GPT5:
        raise RowError(f"model {model} needs max_tokens >= {MIN_TOKENS_GPT5}, got {max_tokens}",
                       field="max_tokens")


def _validate_temperature(temperature: object) -> None:
    if temperature is None:
        return
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise RowError(f"temperature must be a number, got {temperature!r}", field="temperature")
    if not 0 <= temperature <= 2:
        raise RowError(f"temperature must be in [0, 2], got {temperature}", field="temperature")


def retry_delay(attempt: int, *, base: float = 2.0, cap: float = 300.0,
                rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1`: exponential back-off with full jitter."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(ceiling / 2, ceiling)
