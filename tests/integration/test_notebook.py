"""foxbatch.run_dataframe: a DataFrame in, the same rows with results out; resumable; safe
inside a running event loop (Jupyter)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

import foxbatch
from foxbatch.config import Settings
from foxbatch.errors import ConfigError
from foxbatch.notebook import _EngineRun
from foxbatch.store import open_store
from foxbatch.submitter import EngineOptions
from foxbatch.worker import endpoint
from tests.engine_helpers import seed_job

REVIEWS = pd.DataFrame({"id": ["r1", "r2", "r3"], "review": ["great", "awful", "ok, \"fine\""],
                        "stars": [5, 1, None]}, index=[10, 20, 30])
TEMPLATE = "Label the sentiment of: {review}"


def label(db: str, **options) -> pd.DataFrame:
    return foxbatch.run_dataframe(REVIEWS, model="gpt-5.4", template=TEMPLATE, db=db, sim=True,
                                  **options)


def attempts_of_every_job(db: str) -> dict[str, int]:
    repo = open_store(db)
    try:
        return {job.name: repo.job_stats(job.id, since=0).attempts for job in repo.list_jobs()}
    finally:
        repo.engine.dispose()


def test_results_come_back_in_order_with_the_index(sqlite_url):
    out = label(sqlite_url)
    assert list(out.index) == [10, 20, 30]
    assert list(out["id"]) == ["r1", "r2", "r3"] and list(out["review"]) == list(REVIEWS.review)
    assert (out["status"] == "succeeded").all()
    assert out.loc[10, "output"].endswith("to: Label the sentiment of: great")
    assert list(out.columns[:3]) == ["id", "review", "stars"] and "total_tokens" in out


def test_running_the_cell_again_continues_the_same_job(sqlite_url):
    label(sqlite_url)
    first = attempts_of_every_job(sqlite_url)
    [name] = first
    assert name.startswith("dataframe-")
    again = label(sqlite_url)
    assert attempts_of_every_job(sqlite_url) == first  # nothing submitted twice
    assert (again["status"] == "succeeded").all()
    foxbatch.run_dataframe(REVIEWS, model="gpt-5.4", template="Other: {review}", db=sqlite_url,
                           sim=True)
    assert len(attempts_of_every_job(sqlite_url)) == 2  # another template, another job


def test_a_named_job_and_engine_options(sqlite_url):
    out = label(sqlite_url, job="labels", concurrency=2, max_attempts=2, on_doubt="hold",
                max_tokens=64)
    assert len(out) == 3 and list(attempts_of_every_job(sqlite_url)) == ["labels"]


async def test_works_inside_a_running_event_loop(sqlite_url):
    out = label(sqlite_url)  # as in Jupyter: this thread's loop is running
    assert (out["status"] == "succeeded").all()


def test_bad_options_and_a_missing_key(sqlite_url, monkeypatch):
    with pytest.raises(TypeError, match="unexpected options: colour"):
        label(sqlite_url, colour="red")
    monkeypatch.delenv("FOXAPI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="FOXAPI_API_KEY is not set"):
        foxbatch.run_dataframe(REVIEWS, model="gpt-5.4", template=TEMPLATE, db=sqlite_url)


def test_the_public_api():
    assert foxbatch.__all__ == ["run_dataframe"]
    with pytest.raises(AttributeError):
        foxbatch.nothing_here  # noqa: B018


def test_an_engine_run_stops_cleanly_from_another_thread(sqlite_url):
    repo = open_store(sqlite_url)
    job_id = seed_job(repo, 50)
    run = _EngineRun(repo, endpoint(Settings(), sim=True), EngineOptions(concurrency=2), job_id)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(asyncio.run, run.main())
        while repo.counts(job_id)["succeeded"] == 0:
            time.sleep(0.02)
        run.stop()  # what an interrupted cell does
        summary = future.result(timeout=60)
    assert summary.reason == "stopped" and repo.counts(job_id)["submitting"] == 0
    repo.engine.dispose()
