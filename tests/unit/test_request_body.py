"""models: request_body / validate_body, and canonical_json's orjson fast path."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foxbatch.errors import RowError
from foxbatch.models import (
    RequestSpec,
    canonical_json,
    request_body,
    validate_body,
    validate_request,
)


def reference_json(value: object) -> str:
    """The definition canonical_json must keep to."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_canonical_json_is_exactly_json_dumps(value):
    assert canonical_json(value) == reference_json(value)


@pytest.mark.parametrize("value", [
    1e-05, 1e16, 1e-4, 9999999999999998.0, -0.0, float("nan"), float("inf"), 2**64, -(2**63) - 1,
    "lone \ud800 surrogate", {"é": 1, "z": 2, "\U0001f600": 3, "a": [1.5, None, True]},
    {1: "int key"}, {"b": [2**70, {"c": 1e-7}]}, [True, 0, 0.5, {"x": None}],
])
def test_canonical_json_edge_values(value):
    assert canonical_json(value) == reference_json(value)


def test_request_body_matches_the_spec_body():
    spec = RequestSpec(model="gpt-5.4", prompt="hi", system_prompt="be brief", max_tokens=32,
                       temperature=0.5, reasoning=True, extra={"top_p": 0.9})
    body = request_body("gpt-5.4", prompt="hi", system_prompt="be brief", max_tokens=32,
                        temperature=0.5, reasoning=True, extra={"top_p": 0.9})
    assert body == spec.to_body()
    assert body["sync"] is False and body["stream"] is False


def test_request_body_messages_form_drops_the_system_prompt():
    messages = ({"role": "user", "content": "hi"},)
    body = request_body("gpt-5.4", messages=messages, system_prompt="ignored")
    assert body == RequestSpec(model="gpt-5.4", messages=messages).to_body()
    assert "prompt" not in body and "system_prompt" not in body


@pytest.mark.parametrize(("body", "field"), [
    ({"prompt": "hi"}, "model"),
    ({"model": "gpt-5.4", "prompt": " "}, "prompt"),
    ({"model": "gpt-5.4", "prompt": "x" * 100_001}, "prompt"),
    ({"model": "gpt-5.4", "prompt": "hi", "system_prompt": "s" * 10_001}, "system_prompt"),
    ({"model": "gpt-5.4", "prompt": "hi", "temperature": 2.5}, "temperature"),
    ({"model": "gpt-5.4", "prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"model": "gpt-5.4", "prompt": "hi", "max_tokens": 15}, "max_tokens"),
    ({"model": "claude-opus-4-7", "prompt": "hi"}, "max_tokens"),
    ({"model": "gpt-5.4", "messages": []}, "messages"),
])
def test_validate_body_names_the_field(body, field):
    with pytest.raises(RowError) as caught:
        validate_body(body)
    assert caught.value.field == field


def test_validate_body_agrees_with_validate_request():
    spec = RequestSpec(model="claude-opus-4-7", prompt="hi", max_tokens=64, temperature=2.0)
    validate_request(spec)
    validate_body(spec.to_body())
