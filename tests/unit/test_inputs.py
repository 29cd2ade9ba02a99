"""inputs: the JSONL, CSV and Parquet readers, the row mapping and the row validation."""

from __future__ import annotations

import builtins
import datetime as dt
import io
import json
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from foxbatch import inputs
from foxbatch.errors import ConfigError, InputFileError, RowError
from foxbatch.inputs import (
    FieldMap,
    InputFile,
    Record,
    RequestSettings,
    Row,
    RowMapper,
    detect_format,
    template_fields,
)
from foxbatch.models import request_body, request_hash, validate_body

GPT = RequestSettings(model="gpt-5.4")
PROMPT = FieldMap()


def read(path: Path | str, *, fmt: str | None = None, encoding: str | None = None,
         fields: FieldMap = PROMPT, defaults: RequestSettings = GPT) -> list[Row]:
    with InputFile(str(path), RowMapper(fields, defaults), fmt=fmt, encoding=encoding) as rows:
        return list(rows)


def jsonl(tmp_path: Path, *lines: object, name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
                    encoding="utf-8")
    return path


def body(row: Row) -> dict:
    assert row.error is None, row.error
    return json.loads(row.request_json)


def error(row: Row) -> str:
    assert row.error is not None and row.request_json is None
    return str(row.error)


# -- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [
    ("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"), ("a.CSV", "csv"), ("a.parquet", "parquet"),
    ("a.pq", "parquet"), ("-", "jsonl"),
])
def test_format_comes_from_the_extension(name, fmt):
    assert detect_format(name) == fmt


def test_format_override_wins():
    assert detect_format("data.txt", "csv") == "csv"


@pytest.mark.parametrize(("name", "fmt", "error_type", "text"), [
    ("data.txt", None, InputFileError, "--format"),
    ("data", None, InputFileError, "(none)"),
    ("a.jsonl", "xml", ConfigError, "jsonl, csv or parquet"),
    ("-", "csv", ConfigError, "JSONL only"),
])
def test_unknown_formats_are_refused(name, fmt, error_type, text):
    with pytest.raises(error_type, match=text.replace("(", r"\(").replace(")", r"\)")):
        detect_format(name, fmt)


# -- JSONL -----------------------------------------------------------------------------------


def test_jsonl_rows_keep_their_line_numbers_and_text(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "a",  "x": 1}\n\n   \n{"prompt": "b"}\r\n', encoding="utf-8")
    rows = read(path)
    assert [(r.key, r.number) for r in rows] == [("1", 1), ("4", 4)]
    assert rows[0].input_json == '{"prompt": "a",  "x": 1}'
    assert body(rows[0]) == {"model": "gpt-5.4", "prompt": "a", "stream": False, "sync": False}


def test_malformed_and_non_object_lines_are_invalid_rows(tmp_path):
    rows = read(jsonl(tmp_path, {"prompt": "ok"}, '{"prompt": ', "[1, 2]", '"text"'))
    assert error(rows[1]).startswith("line 2: not valid JSON")
    assert error(rows[2]) == "line 3: not a JSON object but an array"
    assert error(rows[3]) == "line 4: not a JSON object but a string"
    assert json.loads(rows[1].input_json) == {"_raw": '{"prompt":'}
    assert [r.key for r in rows] == ["1", "2", "3", "4"]


def test_jsonl_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "hi"}\n')
    assert body(read(path)[0])["prompt"] == "hi"


def test_non_utf8_jsonl_names_the_line_and_suggests_encoding(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(InputFileError, match=r"in.jsonl: line 2 is not valid utf-8.*--encoding"):
        read(path)
    assert body(read(path, encoding="latin-1")[1])["prompt"] == "café"


def test_decode_error_far_into_the_file_names_its_line(tmp_path):
    path = tmp_path / "in.jsonl"
    good = b"".join(b'{"prompt": "row %d"}\n' % i for i in range(1, 3001))
    path.write_bytes(good + b'{"prompt": "\xff"}\n')
    with pytest.raises(InputFileError, match="line 3001 is not valid utf-8"):
        read(path)


def test_unknown_encoding_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--encoding 'nope'"):
        read(jsonl(tmp_path, {"prompt": "a"}), encoding="nope")


def test_stdin_is_read_as_jsonl_and_left_open(monkeypatch):
    data = io.BytesIO(b'{"id": "s1", "prompt": "from stdin"}\n')
    stdin = io.TextIOWrapper(data, encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    with InputFile("-", RowMapper(defaults=GPT)) as source:
        rows = list(source)
        assert source.name == "standard input"
    assert [r.key for r in rows] == ["s1"]
    assert not data.closed


# -- CSV -------------------------------------------------------------------------------------


def csv_file(tmp_path: Path, text: str, *, encoding: str = "utf-8", name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_cells_round_trip_exactly(tmp_path):
    path = csv_file(tmp_path, 'id,prompt,a,b,c,d\n007,hi,NA,null,None,\n')
    row = read(path)[0]
    assert row.key == "007"
    assert json.loads(row.input_json) == {"id": "007", "prompt": "hi", "a": "NA", "b": "null",
                                          "c": "None", "d": ""}
    assert list(json.loads(row.input_json)) == ["id", "prompt", "a", "b", "c", "d"]


def test_csv_quotes_and_embedded_newlines(tmp_path):
    path = csv_file(tmp_path, 'prompt,note\r\n"say ""hi""\nthen stop","x, y"\r\nnext,z\r\n')
    rows = read(path)
    assert body(rows[0])["prompt"] == 'say "hi"\nthen stop'
    assert json.loads(rows[0].input_json)["note"] == "x, y"
    assert [(r.key, r.number) for r in rows] == [("1", 1), ("2", 2)]


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_csv_utf8_with_or_without_bom(tmp_path, bom):
    path = tmp_path / "in.csv"
    path.write_bytes(bom + "prompt,ünï\nnaïve,✓\n".encode())
    row = read(path)[0]
    assert json.loads(row.input_json) == {"prompt": "naïve", "ünï": "✓"}


def test_non_utf8_csv_names_the_line_and_suggests_encoding(tmp_path):
    path = csv_file(tmp_path, "prompt\nplain\ncaf\xe9\n", encoding="latin-1")
    with pytest.raises(InputFileError, match=r"line 3 is not valid utf-8.*--encoding latin-1"):
        read(path)
    assert body(read(path, encoding="latin-1")[1])["prompt"] == "café"


def test_csv_rows_with_the_wrong_number_of_cells_are_invalid(tmp_path):
    path = csv_file(tmp_path, "prompt,b\nok,1\ntoo,many,cells\n\nshort\n")
    rows = read(path)
    assert error(rows[1]) == "row 2 (line 3): has 3 cells where the header has 2"
    assert json.loads(rows[1].input_json) == {"_raw": ["too", "many", "cells"]}
    assert error(rows[2]) == "row 3 (line 5): has 1 cells where the header has 2"


def test_csv_header_naming_a_column_twice_is_refused(tmp_path):
    with pytest.raises(InputFileError, match="names the column 'x' twice"):
        read(csv_file(tmp_path, "prompt,x,x\na,b,c\n"))


def test_csv_settings_are_converted_from_text(tmp_path):
    path = csv_file(tmp_path, "prompt,max_tokens,temperature,reasoning\n"
                              "a,64,0.5,true\nb,,,\nc, 32 ,1,no\n")
    first, second, third = (body(r) for r in read(path, defaults=RequestSettings(
        model="gpt-5.4", max_tokens=100, temperature=1.5)))
    assert (first["max_tokens"], first["temperature"], first["reasoning"]) == (64, 0.5, True)
    assert (second["max_tokens"], second["temperature"], "reasoning" in second) == (
        100, 1.5, False)
    assert (third["max_tokens"], third["temperature"], third["reasoning"]) == (32, 1.0, False)


@pytest.mark.parametrize(("column", "cell", "reason"), [
    ("max_tokens", "many", "max_tokens must be a whole number, got 'many'"),
    ("max_tokens", "12.5", "max_tokens must be a whole number, got '12.5'"),
    ("temperature", "warm", "temperature must be a number, got 'warm'"),
    ("temperature", "NA", "temperature must be a number, got 'NA'"),
    ("reasoning", "maybe", "reasoning must be true or false, got 'maybe'"),
])
def test_csv_settings_that_do_not_convert_are_row_errors(tmp_path, column, cell, reason):
    rows = read(csv_file(tmp_path, f"prompt,{column}\nhi,{cell}\n"))
    assert error(rows[0]) == f"row 1 (line 2): {reason}"
    assert rows[0].error.field == column


def test_a_long_csv_cell_reaches_validation(tmp_path):
    rows = read(csv_file(tmp_path, "prompt\n" + "x" * 200_000 + "\n"))
    assert "prompt has 200000 characters, more than 100000" in error(rows[0])


# -- Parquet ---------------------------------------------------------------------------------


def test_parquet_is_read_batch_by_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "PARQUET_BATCH_ROWS", 3)
    path = tmp_path / "in.parquet"
    table = pa.table({"id": list(range(1, 11)), "prompt": [f"p{i}" for i in range(1, 11)]})
    pq.write_table(table, path, row_group_size=4)
    rows = read(path)
    assert [r.key for r in rows] == [str(i) for i in range(1, 11)]
    assert [r.number for r in rows] == list(range(1, 11))
    assert body(rows[9])["prompt"] == "p10"


def test_parquet_values_are_stored_as_json(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "prompt": ["a", "b"], "max_tokens": [20.0, float("nan")], "when": [
            dt.datetime(2024, 5, 1, 12, 30), None], "price": [Decimal("1.50"), None],
        "tags": [["x", "y"], []]}), path)
    first, second = read(path, defaults=RequestSettings(model="gpt-5.4", max_tokens=99))
    assert json.loads(first.input_json) == {"prompt": "a", "max_tokens": 20.0,
                                            "when": "2024-05-01T12:30:00", "price": "1.50",
                                            "tags": ["x", "y"]}
    assert body(first)["max_tokens"] == 20
    assert body(second)["max_tokens"] == 99  # NaN: a missing value, so the default


def test_a_file_that_is_not_parquet_is_refused(tmp_path):
    path = tmp_path / "in.parquet"
    path.write_text("id,prompt\n")
    with pytest.raises(InputFileError, match="not a readable Parquet file"):
        read(path)


# -- mapping ---------------------------------------------------------------------------------


def test_prompt_field_option(tmp_path):
    rows = read(jsonl(tmp_path, {"text": "from text", "prompt": "not this"}),
                fields=FieldMap(prompt_field="text"))
    assert body(rows[0])["prompt"] == "from text"


def test_template_fills_the_prompt_from_the_row(tmp_path):
    rows = read(jsonl(tmp_path, {"text": "great", "stars": 5}, {"stars": 1}),
                fields=FieldMap(template="Review: {text} ({stars}*)\nLabel:"))
    assert body(rows[0])["prompt"] == "Review: great (5*)\nLabel:"
    assert error(rows[1]) == "line 2: the row has no 'text' field for --template"
    assert rows[1].error.field == "text"


def test_a_template_that_fills_to_nothing_is_an_empty_prompt(tmp_path):
    rows = read(jsonl(tmp_path, {"text": ""}, {"text": " \n"}), fields=FieldMap(template="{text}"))
    assert [error(r) for r in rows] == ["line 1: prompt is empty", "line 2: prompt is empty"]


@given(prompt=st.text(max_size=30), system=st.none() | st.text(max_size=10),
       max_tokens=st.none() | st.integers(-1, 10**20), reasoning=st.none() | st.booleans(),
       temperature=st.none() | st.floats(-1, 3) | st.sampled_from([1e-05, 2e-300]),
       model=st.sampled_from(["gpt-5.4", "claude-opus-4-7", "kimi-k2.6"]))
def test_every_request_is_the_canonical_json_of_its_body(prompt, system, max_tokens, reasoning,
                                                         temperature, model):
    defaults = RequestSettings(model=model, system_prompt=system, max_tokens=max_tokens,
                               temperature=temperature, reasoning=reasoning)
    row = RowMapper(defaults=defaults).to_row(Record(1, 1, {"prompt": prompt}, "{}", None))
    expected = request_body(model, prompt=prompt, system_prompt=system, max_tokens=max_tokens,
                            temperature=temperature, reasoning=reasoning)
    try:
        validate_body(expected)
    except RowError:
        assert row.error is not None and row.request_json is None
        return
    assert row.request_json == json.dumps(expected, sort_keys=True, separators=(",", ":"),
                                          ensure_ascii=False)
    assert row.request_hash == request_hash(row.request_json) and row.model == model


@pytest.mark.parametrize(("template", "text"), [
    ("Review: {}", "not {} or {0}"), ("{0}", "not {} or {0}"), ("a {text", "expected '}'"),
    ("no fields", "uses no field"),
])
def test_unusable_templates_are_config_errors(template, text):
    with pytest.raises(ConfigError, match=text.replace("{", r"\{").replace("}", r"\}")):
        template_fields(template)


def test_messages_form(tmp_path):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    rows = read(jsonl(tmp_path, {"messages": messages}, {"messages": json.dumps(messages)},
                      {"messages": "[not json"}, {"messages": {"role": "user"}},
                      {"messages": messages, "system": "no"}))
    assert body(rows[0])["messages"] == messages and "prompt" not in body(rows[0])
    assert body(rows[1])["messages"] == messages
    assert error(rows[2]).startswith("line 3: messages is not valid JSON")
    assert error(rows[3]) == "line 4: messages must be an array of messages, got an object"
    assert "system_prompt does not apply" in error(rows[4])


def test_messages_in_a_csv_cell(tmp_path):
    cell = json.dumps([{"role": "user", "content": "hi"}]).replace('"', '""')
    rows = read(csv_file(tmp_path, f'messages\n"{cell}"\n'))
    assert body(rows[0])["messages"] == [{"role": "user", "content": "hi"}]


def test_row_settings_override_the_defaults(tmp_path):
    defaults = RequestSettings(model="gpt-5.4", system_prompt="job", max_tokens=100,
                               temperature=0.2, reasoning=True)
    rows = read(jsonl(tmp_path, {"prompt": "a"},
                      {"prompt": "b", "model": "claude-opus-4-7", "system_prompt": "row",
                       "max_tokens": 50, "temperature": 1, "reasoning": False},
                      {"prompt": "c", "system": "alias", "temperature": None}),
                defaults=defaults)
    assert body(rows[0]) == {"model": "gpt-5.4", "prompt": "a", "system_prompt": "job",
                             "max_tokens": 100, "temperature": 0.2, "reasoning": True,
                             "sync": False, "stream": False}
    assert body(rows[1]) == {"model": "claude-opus-4-7", "prompt": "b", "system_prompt": "row",
                             "max_tokens": 50, "temperature": 1.0, "reasoning": False,
                             "sync": False, "stream": False}
    assert body(rows[2])["system_prompt"] == "alias" and body(rows[2])["temperature"] == 0.2


def test_same_request_hashes_the_same_from_jsonl_and_csv(tmp_path):
    from_jsonl = read(jsonl(tmp_path, {"prompt": "hi", "temperature": 1, "max_tokens": 20}))
    from_csv = read(csv_file(tmp_path, "prompt,temperature,max_tokens\nhi,1,20\n"))
    assert from_jsonl[0].request_hash == from_csv[0].request_hash


def test_row_keys(tmp_path):
    rows = read(jsonl(tmp_path, {"id": "a", "prompt": "p"}, {"custom_id": "c", "prompt": "p"},
                      {"id": 42, "prompt": "p"}, {"prompt": "p"}))
    assert [r.key for r in rows] == ["a", "c", "42", "4"]


def test_id_field_option(tmp_path):
    rows = read(jsonl(tmp_path, {"uid": "u1", "id": "ignored", "prompt": "p"}, {"prompt": "p"}),
                fields=FieldMap(id_field="uid"))
    assert rows[0].key == "u1"
    assert error(rows[1]) == "line 2: the row has no 'uid' field (--id-field)"
    assert rows[1].key == "~line:2"


@pytest.mark.parametrize(("key", "reason"), [
    ("", "id is empty"), ("  ", "id is empty"), (None, "id is empty"),
    ("~line:3", "keys starting with '~line:' are reserved"),
    (1.5, "id must be a string or a whole number, got a number"),
    ([1], "id must be a string or a whole number, got an array"),
])
def test_unusable_keys_give_a_key_of_their_own(tmp_path, key, reason):
    rows = read(jsonl(tmp_path, {"id": key, "prompt": "p"}))
    assert reason in error(rows[0]) and rows[0].key == "~line:1"


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("row", "field", "reason"), [
    ({"prompt": ""}, "prompt", "prompt is empty"),
    ({"prompt": "   "}, "prompt", "prompt is empty"),
    ({"prompt": None}, "prompt", "prompt is empty"),
    ({"prompt": 42}, "prompt", "prompt must be a string, got a number"),
    ({"other": "x", "prompt_": 1}, "prompt", "the row has no 'prompt' field"),
    ({"prompt": "x" * 100_001}, "prompt", "more than 100000"),
    ({"prompt": "p", "system_prompt": "s" * 10_001}, "system_prompt", "more than 10000"),
    ({"prompt": "p", "temperature": 2.5}, "temperature", "temperature must be in [0, 2]"),
    ({"prompt": "p", "temperature": -0.1}, "temperature", "temperature must be in [0, 2]"),
    ({"prompt": "p", "max_tokens": 0}, "max_tokens", "max_tokens must be >= 1"),
    ({"prompt": "p", "model": "claude-sonnet-4-6"}, "max_tokens", "requires max_tokens"),
    ({"prompt": "p", "max_tokens": 8}, "max_tokens", "needs max_tokens >= 16"),
    ({"prompt": "p", "model": 7}, "model", "model must be a string"),
    ({"messages": []}, "messages", "messages is empty"),
    ({"messages": [{"role": "user"}]}, "messages", "needs a role and a content"),
])
def test_validation_rules(tmp_path, row, field, reason):
    first = {"prompt": "fine"}  # keeps the file-level check about the prompt field quiet
    rows = read(jsonl(tmp_path, first, row))
    assert reason in error(rows[1])
    assert error(rows[1]).startswith("line 2: ")
    assert rows[1].error.field == field and rows[1].error.line == 2


def test_boundaries_are_accepted(tmp_path):
    rows = read(jsonl(tmp_path, {"prompt": "x" * 100_000, "system_prompt": "s" * 10_000,
                                 "temperature": 2, "max_tokens": 16},
                      {"prompt": "p", "temperature": 0, "model": "claude-opus-4-6",
                       "max_tokens": 1}))
    assert all(r.error is None for r in rows)


def test_a_row_without_a_model_after_the_first_rows_is_invalid(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "SNIFF_ROWS", 2)
    rows = read(jsonl(tmp_path, *([{"prompt": "p", "model": "gpt-5.5"}] * 2), {"prompt": "p"}),
                defaults=RequestSettings())
    assert error(rows[2]) == "line 3: the row names no model and --model is not given"


# -- file-level problems ---------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="nope.jsonl: no such file"):
        read(tmp_path / "nope.jsonl")


def test_directory(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputFileError, match="is a directory"):
        read(tmp_path / "dir.csv")


def test_unreadable_file(tmp_path, monkeypatch):
    path = jsonl(tmp_path, {"prompt": "a"})
    real_open = builtins.open

    def refuse(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    with pytest.raises(InputFileError, match=r"in.jsonl: cannot read it \(Permission denied\)"):
        read(path)


def test_no_prompt_field_at_all(tmp_path):
    with pytest.raises(InputFileError, match="in.jsonl: no 'prompt' field; name the prompt's "
                                             "field with --prompt-field"):
        read(jsonl(tmp_path, {"text": "a"}, {"text": "b"}))
    with pytest.raises(InputFileError, match="in.csv: no 'prompt' column"):
        read(csv_file(tmp_path, "text\na\n"))


def test_no_template_fields_at_all(tmp_path):
    with pytest.raises(InputFileError, match="no column 'body' for --template"):
        read(csv_file(tmp_path, "text\na\n"), fields=FieldMap(template="{text} {body}"))


def test_some_rows_without_the_prompt_field_are_row_errors(tmp_path):
    rows = read(jsonl(tmp_path, {"text": "a"}, {"prompt": "b"}))
    assert error(rows[0]) == "line 1: the row has no 'prompt' field"
    assert rows[1].error is None


def test_no_model_anywhere_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="in.jsonl: line 2 names no model; pass --model"):
        read(jsonl(tmp_path, {"prompt": "a", "model": "gpt-5.4"}, {"prompt": "b"}),
             defaults=RequestSettings())


def test_every_row_naming_a_model_needs_no_default(tmp_path):
    rows = read(jsonl(tmp_path, {"prompt": "a", "model": "gpt-5.5"}), defaults=RequestSettings())
    assert body(rows[0])["model"] == "gpt-5.5"


def test_empty_files_have_no_rows(tmp_path):
    assert read(jsonl(tmp_path)) == []
    assert read(csv_file(tmp_path, "")) == []
    assert read(csv_file(tmp_path, "prompt\n", name="header.csv")) == []
