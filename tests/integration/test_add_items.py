"""Repository.add_items: repeated keys, transactions and the changed-key limit, on both engines."""

from __future__ import annotations

import json

import pytest

from foxbatch.models import RequestSpec, request_hash
from foxbatch.store.records import NewItem
from foxbatch.store.repository import NEW_ITEM_COLUMNS


def item(key: str, index: int, prompt: str = "hello") -> NewItem:
    body = RequestSpec(model="gpt-5.4", prompt=prompt, max_tokens=32).canonical_json()
    return NewItem(key, index, json.dumps({"id": key, "line": index}), body, request_hash(body),
                   "gpt-5.4")


def stand_in(row: NewItem, first: int) -> NewItem:
    """What ingest stores for a repeat: an invalid item under a key of its own."""
    return row._replace(row_key=f"~line:{row.row_index}", request_json=None, request_hash=None,
                        model=None, status="invalid", error_code="invalid_row",
                        error_message=f"{row.row_key} repeats {first}")


def test_new_item_fields_match_the_insert_columns():
    renamed = {"input_json": "input", "request_json": "request"}
    assert tuple(renamed.get(f, f) for f in NewItem._fields) == NEW_ITEM_COLUMNS


@pytest.mark.parametrize("chunk_size", [2, 100])
def test_repeats_in_an_empty_job_keep_the_first_occurrence(repo, chunk_size):
    job = repo.ensure_job("job")
    rows = [item("a", 1), item("b", 2), item("a", 3, "other"), item("c", 4), item("b", 5)]
    result = repo.add_items(job.id, rows, chunk_size=chunk_size, on_repeat=stand_in)
    assert (result.inserted, result.present, result.repeated) == (5, 0, 2)
    assert repo.item_by_key(job.id, "a")["row_index"] == 1
    repeat = repo.item_by_key(job.id, "~line:3")
    assert (repeat["status"], repeat["error_message"]) == ("invalid", "a repeats 1")
    assert repo.item_by_key(job.id, "~line:5")["error_message"] == "b repeats 2"


@pytest.mark.parametrize("chunk_size", [2, 100])
def test_repeats_in_a_job_with_rows_are_found_too(repo, chunk_size):
    job = repo.ensure_job("job")
    rows = [item("a", 1), item("b", 2), item("a", 3, "other")]
    repo.add_items(job.id, rows, on_repeat=stand_in)
    again = repo.add_items(job.id, rows, chunk_size=chunk_size, on_repeat=stand_in)
    assert (again.inserted, again.present, again.repeated, again.changed) == (0, 3, 1, [])


def test_repeats_without_a_stand_in_count_as_present(repo):
    job = repo.ensure_job("job")
    result = repo.add_items(job.id, [item("a", 1), item("a", 2)], chunk_size=1)
    assert (result.inserted, result.present, result.repeated) == (1, 1, 1)


def test_single_transaction_leaves_nothing_when_the_rows_fail(repo):
    job = repo.ensure_job("job")

    def rows():
        yield from (item(str(i), i) for i in range(1, 50))
        raise RuntimeError("bad row")

    with pytest.raises(RuntimeError):
        repo.add_items(job.id, rows(), chunk_size=10, commit_every=None)
    assert sum(repo.counts(job.id).values()) == 0


def test_batched_transactions_keep_what_was_committed(repo):
    job = repo.ensure_job("job")

    def rows():
        yield from (item(str(i), i) for i in range(1, 50))
        raise RuntimeError("bad row")

    with pytest.raises(RuntimeError):
        repo.add_items(job.id, rows(), chunk_size=10, commit_every=20)
    assert repo.counts(job.id)["queued"] == 40


def test_keep_changed_limits_the_list_not_the_count(repo):
    job = repo.ensure_job("job")
    repo.add_items(job.id, [item(str(i), i) for i in range(1, 11)])
    result = repo.add_items(job.id, [item(str(i), i, "new") for i in range(1, 11)],
                            keep_changed=3)
    assert (result.changed, result.changed_count) == (["1", "2", "3"], 10)
