"""Simulated tasks: how each one's fate is drawn, how it looks at a given moment, and the table
that holds them.

A task is `pending` for the first tenth of its latency, then `processing` with a progress that
grows with elapsed time (1..99), then `completed` or `failed` (progress 100). A stuck task stays
`processing` for ever.
"""

from __future__ import annotations

import enum
import math
import random
import string
from dataclasses import dataclass
from typing import Any

from foxbatch.sim.answers import chat_completion
from foxbatch.sim.config import SimConfig

PENDING_SHARE = 0.1
TASK_ERRORS = (("generation_failed", "the upstream model failed to generate a response"),
               ("task_failed", "the task failed upstream"))
CREDITS_RESERVED = 5
_ID_ALPHABET = string.ascii_lowercase + string.digits


class Fate(enum.Enum):
    """How a task ends."""

    COMPLETE = "complete"
    FAIL = "fail"
    STUCK = "stuck"


@dataclass(slots=True)
class Task:
    """One task FoxAPI created, with everything decided at creation."""

    id: str
    body: dict[str, Any]
    created: float
    latency: float
    fate: Fate
    error: tuple[str, str] | None
    empty_polls_left: int
    result: dict[str, Any] | None = None

    @property
    def finished_at(self) -> float:
        """When the task reaches its end (infinity for a stuck task)."""
        return math.inf if self.fate is Fate.STUCK else self.created + self.latency

    def phase(self, now: float) -> tuple[str, int]:
        """The status and progress (0..100) the task shows at `now`."""
        if now >= self.finished_at:
            return ("failed" if self.fate is Fate.FAIL else "completed"), 100
        elapsed = now - self.created
        if elapsed < PENDING_SHARE * self.latency:
            return "pending", 0
        share = elapsed / self.latency if self.latency else 1.0
        return "processing", min(99, max(1, int(100 * share)))


class TaskTable:
    """Every live task by id, and the drawing of new tasks' fates."""

    def __init__(self, config: SimConfig):
        self._config = config
        self._tasks: dict[str, Task] = {}

    def create(self, body: dict[str, Any], request_hash: str, occurrence: int,
               now: float) -> Task:
        """Create the `occurrence`-th (0-based) task for a request, its fate drawn reproducibly.

        The draw depends only on the seed, the request hash and the occurrence, so a request
        gets the same fate on every run whatever the order of the other requests.
        """
        rng = random.Random(f"{self._config.seed}:{request_hash}:{occurrence}")
        task_id = self._new_id(rng, now)
        latency, fate = self._draw_latency(rng), self._draw_fate(rng)
        task = Task(id=task_id, body=body, created=now, latency=latency, fate=fate,
                    error=rng.choice(TASK_ERRORS) if fate is Fate.FAIL else None,
                    empty_polls_left=self._config.empty_result_polls)
        self._tasks[task.id] = task
        return task

    def get(self, task_id: str) -> Task | None:
        """The task of that id, if it exists."""
        return self._tasks.get(task_id)

    def forget(self, task_id: str) -> None:
        """Drop an expired task."""
        self._tasks.pop(task_id, None)

    def _new_id(self, rng: random.Random, now: float) -> str:
        while True:
            suffix = "".join(rng.choices(_ID_ALPHABET, k=8))
            task_id = f"task-llmrouter-{int(now)}-{suffix}"
            if task_id not in self._tasks:
                return task_id

    def _draw_latency(self, rng: random.Random) -> float:
        median = self._config.latency_median
        if median == 0:
            return 0.0
        return rng.lognormvariate(math.log(median), self._config.latency_sigma)

    def _draw_fate(self, rng: random.Random) -> Fate:
        draw = rng.random()
        if draw < self._config.stuck_rate:
            return Fate.STUCK
        if draw < self._config.stuck_rate + self._config.failure_rate:
            return Fate.FAIL
        return Fate.COMPLETE


def task_document(task: Task, status: str, progress: int) -> dict[str, Any]:
    """The task object of foxapi.md §2/§3, without results (as a submit answers it)."""
    return {"id": task.id, "object": "llm.generation.task", "type": "llm",
            "model": task.body["model"], "status": status, "progress": progress,
            "created": int(task.created), "stream": None, "results": None, "error": None}


def poll_document(task: Task, now: float) -> tuple[dict[str, Any], bool]:
    """The task object a poll answers at `now`, and whether its results were withheld.

    A completed task withholds its results (`results: null`) from its first
    `empty_result_polls` polls, as FoxAPI has been seen to do.
    """
    status, progress = task.phase(now)
    document = task_document(task, status, progress)
    document["usage"] = {"credits_reserved": CREDITS_RESERVED, "user_group": "default"}
    withheld = False
    if status == "failed" and task.error is not None:
        code, message = task.error
        document["error"] = {"code": code, "message": message, "type": "task_error"}
    elif status == "completed" and task.empty_polls_left > 0:
        task.empty_polls_left -= 1
        withheld = True
    elif status == "completed":
        document["results"] = [completed_result(task)]
    return document, withheld


def completed_result(task: Task) -> dict[str, Any]:
    """The task's ChatCompletion, built once on first need."""
    if task.result is None:
        task.result = chat_completion(task.body, completion_id=f"chatcmpl-{task.id[-8:]}",
                                      created=int(task.finished_at))
    return task.result
