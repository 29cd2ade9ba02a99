"""Helpers for engine tests: seed a job, run the engine against a simulator, check invariants."""

from __future__ import annotations

import json
from typing import Any

import httpx

from foxbatch.client import FoxClient
from foxbatch.models import RequestSpec, request_hash
from foxbatch.runner import Runner, RunSummary
from foxbatch.sim import Simulator, expected_completion
from foxbatch.store import Repository
from foxbatch.store.records import NewItem
from foxbatch.submitter import EngineOptions


def seed_job(repo: Repository, n: int, *, name: str = "job", model: str = "gpt-5.4") -> int:
    """A job of `n` rows with distinct prompts; returns its id."""
    job = repo.ensure_job(name)
    rows = []
    for i in range(1, n + 1):
        spec = RequestSpec(model=model, prompt=f"row {i}: say something", max_tokens=32)
        body = spec.canonical_json()
        rows.append(NewItem(str(i), i, json.dumps({"id": i}), body, request_hash(body), model))
    repo.add_items(job.id, rows)
    return job.id


async def run_engine(repo: Repository, sim: Simulator | None, job_id: int | None, *,
                     base_url: str = "http://sim", api_key: str = "sk-test",
                     **options: Any) -> RunSummary:
    """Run a Runner until done against `sim` in-process (or `base_url` over HTTP)."""
    transport = httpx.ASGITransport(app=sim.app) if sim is not None else None
    async with FoxClient(base_url, api_key, transport=transport) as client:
        runner = Runner(repo, client, EngineOptions(**options),
                        job_ids=[job_id] if job_id is not None else None)
        return await runner.run()


def assert_answers_are_their_own(repo: Repository, job_id: int) -> int:
    """Every succeeded row holds the simulator's answer to its own request; returns how many."""
    succeeded = 0
    for item in repo.iter_items(job_id):
        if item["status"] == "succeeded":
            assert item["output"] == expected_completion(json.loads(item["request"])), item
            succeeded += 1
    return succeeded


def in_doubt_total(repo: Repository, job_id: int) -> int:
    """The job's in-doubt resubmissions, as `status` reports them."""
    return sum(item["in_doubt_resubmits"] for item in repo.iter_items(job_id))


def assert_duplicates_within_in_doubt(repo: Repository, sim: Simulator, job_id: int) -> None:
    """Every duplicate task the simulator saw is accounted for by a reported in-doubt
    resubmission (or a held row)."""
    held = sum(1 for item in repo.iter_items(job_id) if item["error_code"] == "in_doubt_held")
    assert sim.stats()["duplicates"] <= in_doubt_total(repo, job_id) + held
