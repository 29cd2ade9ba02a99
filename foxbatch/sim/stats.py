"""What the simulator saw: request, task, response and fault counts.

The snapshot (`Counters.snapshot`, served at GET /_sim/stats) is a JSON-ready dict:

    submits        POST /v1/llm/generations requests received, whatever their outcome
    polls          GET /v1/tasks/{id} requests received
    model_lists    GET /v1/configs/llm_generations_models requests received
    tasks_created  tasks created (including those whose submit then failed or was dropped)
    tasks_by_hash  {request hash: tasks created}; the hash is sha256 of
                   foxbatch.models.canonical_json(parsed body), as foxbatch's `request_hash`
    duplicates     tasks created beyond the first for the same request hash
    rate_limited   429 answers (random and --rps together)
    responses      {HTTP status as a string: answers sent}, /_sim/ endpoints aside;
                   dropped connections count as "dropped"
    faults         {kind: times injected} for every kind in FAULT_KINDS (zeros included)

`Simulator.stats()` adds `process_cpu_seconds`, the CPU time of the simulator's process.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

FAULT_KINDS = (
    "429_random",         # p429
    "429_rps",            # over the rps limit
    "5xx_get",            # p5xx_get
    "5xx_submit_before",  # p5xx_submit_before: no task created
    "5xx_submit_after",   # p5xx_submit_after: task created
    "drop_submit",        # pdrop_submit: task created, connection broken
    "task_failed",        # failure_rate, counted when the task is created
    "task_stuck",         # stuck_rate, counted when the task is created
    "empty_results",      # each poll answered completed with results null
    "expired",            # each task forgotten after expire_after
    "quota_exceeded",     # each submit refused with 402
)


class Counters:
    """Thread-safe counts; the server's event loop writes while a test thread may read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._by_hash: Counter[str] = Counter()
        self._responses: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()

    def request(self, kind: str) -> None:
        """Count one request of `kind`: submits, polls or model_lists."""
        with self._lock:
            self._requests[kind] += 1

    def task_created(self, request_hash: str) -> int:
        """Count a new task for `request_hash`; return how many existed for it before."""
        with self._lock:
            before = self._by_hash[request_hash]
            self._by_hash[request_hash] = before + 1
            return before

    def total_tasks(self) -> int:
        """How many tasks were created in all."""
        with self._lock:
            return self._by_hash.total()

    def response(self, status: int | str) -> None:
        """Count one answer (an HTTP status, or "dropped")."""
        with self._lock:
            self._responses[str(status)] += 1

    def fault(self, kind: str) -> None:
        """Count one injected fault of a kind in FAULT_KINDS."""
        with self._lock:
            self._faults[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        """Every count, as the dict described in this module's docstring."""
        with self._lock:
            created = self._by_hash.total()
            return {
                "submits": self._requests["submits"],
                "polls": self._requests["polls"],
                "model_lists": self._requests["model_lists"],
                "tasks_created": created,
                "tasks_by_hash": dict(self._by_hash),
                "duplicates": created - len(self._by_hash),
                "rate_limited": self._faults["429_random"] + self._faults["429_rps"],
                "responses": dict(self._responses),
                "faults": {kind: self._faults[kind] for kind in FAULT_KINDS},
            }
