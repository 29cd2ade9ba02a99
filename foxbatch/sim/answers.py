"""What the simulated models answer: a documented, reproducible function of the request.

The answer to a valid body is

    "[{tag}] Simulated answer from {model} to: {gist}"

where `tag` is the first 12 hex digits of the sha256 of the canonical JSON of the body's
*answer key* (the model, the system prompt and the prompt for the text form; the model and the
messages for the messages form) and `gist` is the first 40 characters of the last user text,
whitespace collapsed. Two bodies get the same answer only when their answer keys are equal, so
`expected_completion(body)` tells whether a stored completion belongs to its row.

Token counts are estimates of about four characters a token (at least one). When the body's
`max_tokens` is smaller than the answer's token count, the answer is cut to `max_tokens * 4`
characters, but never shorter than its bracketed tag, and the finish reason is `length`
(completion tokens then equal `max_tokens`); otherwise it is `stop`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from foxbatch.models import canonical_json

CHARS_PER_TOKEN = 4
GIST_CHARS = 40
TAG_HEX_DIGITS = 12


def expected_completion(body: Mapping[str, Any]) -> str:
    """The completion text the simulator answers for a valid submit body."""
    text, _ = _answer(body)
    return text


def chat_completion(body: Mapping[str, Any], *, completion_id: str,
                    created: int) -> dict[str, Any]:
    """The full OpenAI ChatCompletion a completed task carries in `results[0]`."""
    text, finish_reason = _answer(body)
    prompt_tokens = estimate_tokens(prompt_text(body))
    completion_tokens = estimate_tokens(text)
    if finish_reason == "length":
        completion_tokens = body["max_tokens"]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def estimate_tokens(text: str) -> int:
    """About one token per four characters, at least one."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def prompt_text(body: Mapping[str, Any]) -> str:
    """All the text a body sends: system prompt and prompt, or every message's text."""
    messages = body.get("messages")
    if messages is not None:
        return "\n".join(message_text(m) for m in messages)
    return "\n".join(part for part in (body.get("system_prompt"), body["prompt"]) if part)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message: its string content, or its text blocks joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(block.get("text", "") for block in content
                         if isinstance(block, Mapping) and block.get("type") == "text")
    return ""


def _answer(body: Mapping[str, Any]) -> tuple[str, str]:
    """The answer text and its finish reason (`length` when cut by `max_tokens`)."""
    digest = hashlib.sha256(canonical_json(_answer_key(body)).encode("utf-8")).hexdigest()
    tag = f"[{digest[:TAG_HEX_DIGITS]}]"
    gist = " ".join(_last_user_text(body).split())[:GIST_CHARS].rstrip()
    text = f"{tag} Simulated answer from {body['model']} to: {gist}"
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and estimate_tokens(text) > max_tokens:
        return text[: max(max_tokens * CHARS_PER_TOKEN, len(tag))], "length"
    return text, "stop"


def _answer_key(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a body the answer depends on."""
    if body.get("messages") is not None:
        return {"model": body["model"], "messages": body["messages"]}
    return {"model": body["model"], "system_prompt": body.get("system_prompt"),
            "prompt": body["prompt"]}


def _last_user_text(body: Mapping[str, Any]) -> str:
    """The prompt, or the text of the last user message (of the last message if none is)."""
    messages = body.get("messages")
    if messages is None:
        return body["prompt"]
    users = [m for m in messages if m.get("role") == "user"]
    return message_text((users or messages)[-1])
