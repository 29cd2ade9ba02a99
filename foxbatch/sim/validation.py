"""The rules FoxAPI applies to a submit body (foxapi.md §2), over raw JSON.

The limits come from `foxbatch.models`, the one place the numbers of foxapi.md live; the checks
are written again here on purpose: the simulator stands in for FoxAPI, so a mistake in
foxbatch's own row validation must show up against it rather than be shared by both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foxbatch.models import (
    MAX_PROMPT_CHARS,
    MAX_SYSTEM_CHARS,
    MIN_TOKENS_GPT5,
    MODELS_REQUIRING_MAX_TOKENS,
    MODELS_WITH_MIN_16_TOKENS,
)
from foxbatch.sim.replies import HttpError

MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
CONTENT_BLOCK_TYPES = frozenset({"text", "image_url", "video_url", "audio_url", "file_url"})
MEDIA_FORM_FIELDS = ("image_urls", "video_urls", "audio_url")


def check_submit(body: object, models: tuple[str, ...] | None) -> dict[str, Any]:
    """Return `body` if FoxAPI would accept it, else raise the HttpError FoxAPI answers.

    `models` is the configured model list (None accepts any model).
    """
    if not isinstance(body, dict):
        raise HttpError(400, "the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("model is required")
    if models is not None and model not in models:
        raise HttpError(422, f"model {model} is not supported", code="model_not_supported")
    _check_form(body)
    _check_max_tokens(model, body.get("max_tokens"))
    _check_temperature(body.get("temperature"))
    _check_flags(body)
    return body


def _invalid(message: str) -> HttpError:
    return HttpError(422, message, code="invalid_param")


def _check_form(body: Mapping[str, Any]) -> None:
    """The body form is chosen by the first field present: messages > media > prompt."""
    if "messages" in body:
        _check_messages(body["messages"])
    elif any(name in body for name in MEDIA_FORM_FIELDS):
        raise HttpError(422, "the simulator answers only the text and messages forms",
                        code="unsupported_content_type")
    else:
        _check_prompt(body.get("prompt"), body.get("system_prompt"))


def _check_prompt(prompt: object, system_prompt: object) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid("prompt is required and must not be empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _invalid(f"prompt must be at most {MAX_PROMPT_CHARS} characters")
    if system_prompt is None:
        return
    if not isinstance(system_prompt, str):
        raise _invalid("system_prompt must be a string")
    if len(system_prompt) > MAX_SYSTEM_CHARS:
        raise _invalid(f"system_prompt must be at most {MAX_SYSTEM_CHARS} characters")


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty array")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            raise _invalid(f"messages[{index}] needs a role among {sorted(MESSAGE_ROLES)}")
        _check_content(index, message.get("content"))


def _check_content(index: int, content: object) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid(f"messages[{index}].content must be a string or an array of blocks")
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in CONTENT_BLOCK_TYPES:
            raise HttpError(422, f"messages[{index}] has a content block of type {kind!r}",
                            code="unsupported_content_type")


def _check_max_tokens(model: str, max_tokens: object) -> None:
    if max_tokens is None:
        if model in MODELS_REQUIRING_MAX_TOKENS:
            raise HttpError(422, f"model {model} requires max_tokens",
                            code="model_rule_violation")
        return
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _invalid("max_tokens must be an integer >= 1")
    if model in MODELS_WITH_MIN_16_TOKENS and max_tokens < MIN_TOKENS_GPT5:
        raise HttpError(422, f"model {model} requires max_tokens >= {MIN_TOKENS_GPT5}",
                        code="model_rule_violation")


def _check_temperature(temperature: object) -> None:
    if temperature is None:
        return
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise _invalid("temperature must be a number")
    if not 0 <= temperature <= 2:
        raise _invalid("temperature must be between 0 and 2")


def _check_flags(body: Mapping[str, Any]) -> None:
    """sync and stream are accepted only as false: the simulator has no SSE or sync mode."""
    for name in ("reasoning", "sync", "stream"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _invalid(f"{name} must be a boolean")
    for name in ("sync", "stream"):
        if body.get(name):
            raise HttpError(422, f"the simulator does not support {name}=true",
                            code="unsupported_advanced_options")
