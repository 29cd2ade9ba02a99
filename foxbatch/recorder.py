"""Store access for the async engine: one database thread and the group commit.

All store calls of a running engine go through `StoreThread`, a single worker thread, so the event
loop never blocks on the database and a process never contends with itself for SQLite's write
lock. `Recorder` buffers outcomes and writes them in one transaction at most `max_delay` after
the first arrived (crash rule 2: a response is durable within 100 ms), or sooner when the batch
is full or the engine has nothing more in flight.
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


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` have passed, whichever comes first.

    asyncio.timeout, not asyncio.wait_for: on Python 3.11, wait_for swallows a cancellation
    that arrives just as the event is set, and a cancelled loop would then wait for ever.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


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
        self._due = asyncio.Event()
        self._on_applied = on_applied
        self._committing: asyncio.Future[None] | None = None
        self._committing_batch: list[Outcome] = []
        self.totals = Applied()
        self.commits = 0

    @property
    def pending(self) -> int:
        """Outcomes not committed yet (buffered, or in the commit under way)."""
        return len(self._buffer) + len(self._committing_batch)

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome for the next group commit."""
        self._buffer.append(outcome)
        self._arrived.set()
        if len(self._buffer) >= self._max_batch:
            self._due.set()

    def commit_soon(self) -> None:
        """Commit what is buffered without waiting out the delay (nothing more is coming)."""
        if self._buffer:
            self._due.set()

    async def run(self) -> None:
        """Commit batches until cancelled; a cancelled recorder commits what it holds first."""
        try:
            while True:
                await self._arrived.wait()
                await wait_event(self._due, self._max_delay)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        """Commit everything buffered now (after the commit under way, if any).

        A commit runs as its own task and is awaited shielded: cancelling the caller (the
        engine shutting down) cannot drop a batch that was taken from the buffer but not yet
        handed to the database thread.
        """
        if self._committing is not None:
            await asyncio.shield(self._committing)
        batch, self._buffer = self._buffer, []
        self._arrived.clear()
        self._due.clear()
        if not batch:
            return
        self._committing_batch = batch
        self._committing = asyncio.ensure_future(self._commit(batch))
        await asyncio.shield(self._committing)

    async def _commit(self, batch: list[Outcome]) -> None:
        try:
            applied = await self._db.call(self._db.repo.apply, batch)
        finally:
            self._committing, self._committing_batch = None, []
        self.commits += 1
        self.totals.applied += applied.applied
        self.totals.refused += applied.refused
        if applied.refused:
            log.warning("%d result(s) not recorded: their rows were taken over by another "
                        "worker after a lease expired", applied.refused)
        if self._on_applied is not None:
            self._on_applied(batch)
