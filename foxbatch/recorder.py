"""Store access for the async engine: one database thread and the group commit.

All store calls of a running engine go through `StoreThread`, a single worker thread, so the event
loop never blocks on the database and a process never contends with itself for SQLite's write
lock. `Recorder` buffers outcomes and writes them in one transaction at most `max_delay` after
the first arrived (crash rule 2: a response is durable within 100 ms), or sooner when the batch
is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from foxbatch.store import Repository
from foxbatch.store.records import Applied, Outcome

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_DELAY = 0.05
MAX_BATCH = 2_000


class StoreThread:
    """Runs repository calls on one dedicated thread."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foxbatch-db")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the database thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        """Stop the thread once queued calls are done."""
        self._executor.shutdown(wait=True)


class Recorder:
    """Group commit: outcomes are buffered and applied together, compare-and-set each."""

    def __init__(self, db: StoreThread, *, max_delay: float = MAX_DELAY,
                 max_batch: int = MAX_BATCH, on_applied: Callable[[list[Outcome]], None]
                 | None = None):
        self._db = db
        self._max_delay = max_delay
        self._max_batch = max_batch
        self._buffer: list[Outcome] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._on_applied = on_applied
        self.totals = Applied()
        self.commits = 0

    @property
    def pending(self) -> int:
        """Outcomes waiting for the next commit."""
        return len(self._buffer)

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome for the next group commit."""
        self._buffer.append(outcome)
        self._arrived.set()
        if len(self._buffer) >= self._max_batch:
            self._full.set()

    async def run(self) -> None:
        """Commit batches until cancelled; a cancelled recorder commits what it holds first."""
        try:
            while True:
                await self._arrived.wait()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=self._max_delay)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        """Commit everything buffered now."""
        batch, self._buffer = self._buffer, []
        self._arrived.clear()
        self._full.clear()
        if not batch:
            return
        applied = await self._db.call(self._db.repo.apply, batch)
        self.commits += 1
        self.totals.applied += applied.applied
        self.totals.refused += applied.refused
        if applied.refused:
            log.warning("%d result(s) not recorded: their rows were taken over by another "
                        "worker after a lease expired", applied.refused)
        if self._on_applied is not None:
            self._on_applied(batch)
