"""A worker wired to FoxAPI: which API to talk to (FoxAPI itself, or the bundled simulator
in-process) and a Runner over a client for it. The command line and the notebook API share
this; neither the API key nor the simulator's answers are decided anywhere else."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from foxbatch.budget import budget_key
from foxbatch.client import FoxClient
from foxbatch.config import Settings
from foxbatch.errors import ConfigError
from foxbatch.runner import Runner
from foxbatch.store import Repository
from foxbatch.submitter import EngineOptions

SIM_BASE_URL = "http://foxapi.sim"
# The simulator never sees the real key, even when one is set.
SIM_API_KEY = "sk-sim"
SIM_NOTICE = "using the bundled FoxAPI simulator in-process; the answers are simulated"


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: a base URL and key, and for the simulator its in-process transport."""

    base_url: str
    api_key: str = field(repr=False)
    transport: httpx.AsyncBaseTransport | None = None


def endpoint(settings: Settings, *, sim: bool = False) -> Endpoint:
    """FoxAPI at the settings' base URL with their key, or (`sim`) the simulator in-process.
    ConfigError when FoxAPI is wanted and no key is set."""
    if sim:
        return Endpoint(SIM_BASE_URL, SIM_API_KEY, simulator_transport())
    if not settings.api_key:
        raise ConfigError("FOXAPI_API_KEY is not set (or pass --sim to try the simulator)")
    return Endpoint(settings.base_url, settings.api_key)


def simulator_transport() -> httpx.AsyncBaseTransport:
    """A fresh simulator with quick, fault-free answers (a third of a second median), mounted
    in-process."""
    from foxbatch.sim import SimConfig, Simulator  # the simulator is only loaded when asked for

    simulator = Simulator(SimConfig(seed=0, latency_median=0.3, latency_sigma=0.5))
    return httpx.ASGITransport(app=simulator.app)


@asynccontextmanager
async def open_runner(repo: Repository, target: Endpoint, options: EngineOptions, *,
                      job_ids: Sequence[int] | None, **runner_options: Any
                      ) -> AsyncIterator[Runner]:
    """A Runner for `job_ids` over a client for `target`, which closes when the block ends.
    Workers with the same key and base URL share one --rps budget in the store."""
    options = dataclasses.replace(options, rate_key=budget_key(target.base_url, target.api_key))
    async with FoxClient(target.base_url, target.api_key, transport=target.transport,
                         max_connections=options.concurrency) as client:
        yield Runner(repo, client, options, job_ids=job_ids, **runner_options)
