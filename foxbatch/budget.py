"""The requests/s budget of an API key, shared by every worker through the task store.

FoxAPI limits an API key, not a process: N workers started with `--rps R` must together send at
most R requests a second. Each worker's Limiter takes one token per request from a
`StoreTokenSource`, which leases tokens from the key's row in `rate_budgets` a batch at a time
(see `Repository.lease_rate_tokens`: one atomic UPDATE ... RETURNING of a GCRA "theoretical
arrival time"). Leases never overlap, whichever worker makes them, and cost the store one short
transaction per batch (about four a second per key), not one per request. A 429 seen by one
worker holds the whole budget for the pause, so every worker of the key pauses with it.

The row is named by a fingerprint of the base URL and the API key (`budget_key`), so workers
using the same key share a budget without the key being stored anywhere.
"""

from __future__ import annotations

import hashlib

from foxbatch.ratelimit import BURST_SECONDS, TokenGrant
from foxbatch.recorder import StoreThread


def budget_key(base_url: str, api_key: str | None) -> str:
    """The name of the shared budget for this API key at this base URL (a one-way fingerprint:
    the key cannot be read back from it)."""
    material = f"foxbatch rate budget\n{base_url.rstrip('/')}\n{api_key or ''}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


class StoreTokenSource:
    """A `TokenSource` for the Limiter: tokens of the budget `key`, leased through the store."""

    def __init__(self, db: StoreThread, key: str, rps: float):
        self._db = db
        self._key = key
        self._rps = rps

    async def lease(self, n: int) -> TokenGrant:
        """Lease the next `n` tokens of the shared budget."""
        wait = await self._db.call(self._db.repo.lease_rate_tokens, self._key, n,
                                   rate=self._rps, burst=BURST_SECONDS)
        return TokenGrant(wait=wait, count=n, spacing=1.0 / self._rps)

    async def hold(self, seconds: float) -> None:
        """Let no token of the shared budget fall due for `seconds`."""
        await self._db.call(self._db.repo.hold_rate_budget, self._key, seconds)
