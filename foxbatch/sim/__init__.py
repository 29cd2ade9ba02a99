"""The FoxAPI simulator: an ASGI app that behaves as foxapi.md says FoxAPI does, faults included.

    sim = Simulator(SimConfig(seed=1, failure_rate=0.1))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim")
    ...
    sim.stats()["duplicates"]

`expected_completion(body)` is the answer the simulator gives to a body; `serve_in_thread` and
`serve_in_subprocess` (in `foxbatch.sim.server`) run it on a real loopback port.
"""

from __future__ import annotations

from foxbatch.sim.answers import expected_completion
from foxbatch.sim.app import Simulator
from foxbatch.sim.config import DEFAULT_MODELS, SimConfig
from foxbatch.sim.replies import ConnectionDropped
from foxbatch.sim.server import serve_in_subprocess, serve_in_thread
from foxbatch.sim.stats import FAULT_KINDS

__all__ = [
    "DEFAULT_MODELS",
    "FAULT_KINDS",
    "ConnectionDropped",
    "SimConfig",
    "Simulator",
    "expected_completion",
    "serve_in_subprocess",
    "serve_in_thread",
]
