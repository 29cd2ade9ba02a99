"""Reading FoxAPI's answers: JSON bodies and the completion fields stored from them."""

from __future__ import annotations

import json
import math

import pytest

from foxbatch.client import compact_json, completion_fields
from foxbatch.wire import Answer


def answer(body: bytes) -> Answer:
    """A 200 answer with `body`."""
    return Answer(200, "OK", {}, body)


def test_a_body_is_read_as_json():
    assert answer(b'{"id": "t1", "progress": 40}').json() == {"id": "t1", "progress": 40}


def test_a_body_with_nan_is_read_by_the_standard_library():
    assert math.isnan(answer(b'{"score": NaN}').json()["score"])


def test_a_body_that_is_not_json_raises_value_error():
    with pytest.raises(ValueError):
        answer(b"<html>502 Bad Gateway</html>").json()


def test_compact_json_keeps_non_ascii_and_has_no_spaces():
    assert compact_json({"a": "héllo ✓", "b": [1, 2]}) == '{"a":"héllo ✓","b":[1,2]}'


def test_compact_json_keeps_nan_and_infinities_as_they_came():
    parsed = answer(b'{"logprob": -Infinity, "score": NaN, "ok": [1.5]}').json()
    assert compact_json(parsed) == '{"logprob":-Infinity,"score":NaN,"ok":[1.5]}'


def test_compact_json_writes_integers_beyond_64_bits():
    assert json.loads(compact_json({"n": 2**70})) == {"n": 2**70}


def test_completion_fields_store_the_result_as_compact_json():
    result = {"model": "gpt-5.4", "choices": [{"message": {"content": "ok"},
                                               "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
    fields = completion_fields(result)
    assert json.loads(fields["result_json"]) == result
    assert (fields["output"], fields["finish_reason"], fields["total_tokens"]) == ("ok", "stop", 4)
