"""`run_dataframe`: a DataFrame of prompts in, the same rows with their completions out.

    import foxbatch
    labeled = foxbatch.run_dataframe(reviews, model="gpt-5.4",
                                     template="Label the sentiment of: {review}", sim=True)

The DataFrame goes through the same path as `foxbatch run`: its rows are written to a
temporary JSONL file and ingested into a job of the task store (`db`, default
sqlite:///foxbatch.db), the engine submits and polls until the job is finished, and the job is
exported in input order: the DataFrame's columns (as JSON gives them back: numbers, strings,
None; dates as ISO text), then foxbatch's result columns (output, status, tokens, ...; a name
clash is resolved as in `foxbatch export`).

Resumable: without `job=`, the job is named `dataframe-<hash>` after the DataFrame's content
and the request settings, so running the same cell again (after an interrupt, a crash or a
kernel restart) continues the same job and pays for nothing twice; a different DataFrame or
template makes a new job. With `job=`, that name is used and new rows are added to it.

Inside Jupyter, where an event loop is already running, the engine runs on a worker thread with
its own loop; interrupting the cell stops it cleanly (run the cell again to resume).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foxbatch.config import Settings
from foxbatch.export import ExportOptions, export_rows, plan_columns
from foxbatch.ingest import IngestOptions, ingest
from foxbatch.models import OnDoubt
from foxbatch.runner import Runner, RunSummary
from foxbatch.store import Repository, open_store
from foxbatch.store.records import Job
from foxbatch.submitter import EngineOptions
from foxbatch.worker import SIM_NOTICE, Endpoint, endpoint, open_runner

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

INGEST_SETTINGS = frozenset({"system", "max_tokens", "temperature", "reasoning",
                             "prompt_field", "id_field"})
ENGINE_SETTINGS = frozenset({"concurrency", "rps", "max_attempts", "on_doubt",
                             "lease_seconds", "retry_base"})
JOB_PREFIX = "dataframe-"
HASH_DIGITS = 12


def run_dataframe(df: pd.DataFrame, *, model: str | None = None, template: str | None = None,
                  db: str | None = None, job: str | None = None, sim: bool = False,
                  base_url: str | None = None, **options: Any) -> pd.DataFrame:
    """Run every row of `df` through FoxAPI (or, with `sim=True`, the bundled simulator) and
    return the rows with their results, in order (the index of `df` is kept).

    `model` and `template` (str.format over the columns, e.g. "Review: {text}") are the job's
    request defaults; a row's own model, system_prompt, max_tokens, temperature or reasoning
    column overrides them. More `options`: the request defaults system, max_tokens,
    temperature, reasoning; prompt_field and id_field (which columns hold the prompt and the
    key); the engine settings concurrency, rps, max_attempts, on_doubt, lease_seconds and
    retry_base. The API key comes from FOXAPI_API_KEY. Raises the FatalApiError that stopped
    the run (401, 402) and KeyboardInterrupt when interrupted; run the cell again to resume.
    """
    ingest_options, engine_options = _split_options(options, model=model, template=template)
    settings = Settings.load(db_url=db, base_url=base_url)
    target = endpoint(settings, sim=sim)
    if sim:
        log.warning("foxbatch: %s", SIM_NOTICE)
    repo = open_store(settings.db_url)
    try:
        stored = _ingest_frame(repo, df, ingest_options, job)
        summary = _run_until_done(repo, target, engine_options, stored.id)
        if summary.fatal is not None:
            raise summary.fatal
        if summary.reason == "stopped":
            raise KeyboardInterrupt("foxbatch: stopped; run the same cell again to resume")
        return _result_frame(repo, stored, df)
    finally:
        repo.engine.dispose()


def dataframe_job_name(jsonl: bytes, options: IngestOptions) -> str:
    """The job name of a DataFrame: a hash of its rows (as JSONL) and its request settings."""
    digest = hashlib.sha256(jsonl)
    digest.update(json.dumps(options.job_defaults(), sort_keys=True).encode("utf-8"))
    return JOB_PREFIX + digest.hexdigest()[:HASH_DIGITS]


def _split_options(options: dict[str, Any], *, model: str | None,
                   template: str | None) -> tuple[IngestOptions, EngineOptions]:
    unknown = sorted(set(options) - INGEST_SETTINGS - ENGINE_SETTINGS)
    if unknown:
        raise TypeError(f"run_dataframe() got unexpected options: {', '.join(unknown)}")
    engine = {k: v for k, v in options.items() if k in ENGINE_SETTINGS}
    if "on_doubt" in engine:
        engine["on_doubt"] = OnDoubt(engine["on_doubt"])
    ingest_values = {k: v for k, v in options.items() if k in INGEST_SETTINGS}
    return (IngestOptions(model=model, template=template, **ingest_values),
            EngineOptions(**engine))


def _ingest_frame(repo: Repository, df: pd.DataFrame, options: IngestOptions,
                  job: str | None) -> Job:
    """Store the DataFrame's rows in their job (named after their content unless `job`)."""
    jsonl = df.to_json(orient="records", lines=True, force_ascii=False,
                       date_format="iso").encode("utf-8")
    name = job or dataframe_job_name(jsonl, options)
    with tempfile.TemporaryDirectory(prefix="foxbatch-") as folder:
        path = Path(folder) / f"{name}.jsonl"
        path.write_bytes(jsonl)
        return ingest(repo, str(path), dataclasses.replace(options, job=name,
                                                           format="jsonl")).job


def _run_until_done(repo: Repository, target: Endpoint, options: EngineOptions,
                    job_id: int) -> RunSummary:
    """Run the engine over the job until it is finished; on a worker thread with its own event
    loop when this thread already runs one (Jupyter)."""
    run = _EngineRun(repo, target, options, job_id)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run.main())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="foxbatch-engine") as pool:
        future = pool.submit(asyncio.run, run.main())
        try:
            return future.result()
        except KeyboardInterrupt:
            run.stop()
            future.result()
            raise


class _EngineRun:
    """One engine run that another thread can stop."""

    def __init__(self, repo: Repository, target: Endpoint, options: EngineOptions,
                 job_id: int):
        self.repo, self.target, self.options, self.job_id = repo, target, options, job_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Runner | None = None

    async def main(self) -> RunSummary:
        """Run until the job is finished (or stopped)."""
        self._loop = asyncio.get_running_loop()
        async with open_runner(self.repo, self.target, self.options,
                               job_ids=[self.job_id]) as runner:
            self._runner = runner
            return await runner.run(until_done=True)

    def stop(self) -> None:
        """Ask the run to stop (from any thread); it records what is in flight first."""
        if self._loop is not None and self._runner is not None:
            self._loop.call_soon_threadsafe(self._runner.stop)


def _result_frame(repo: Repository, job: Job, df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    columns = plan_columns(repo, job.id, ExportOptions())
    out = pd.DataFrame.from_records(list(export_rows(repo, job, columns)),
                                    columns=columns.header)
    if len(out) == len(df):
        out.index = df.index
    return out
