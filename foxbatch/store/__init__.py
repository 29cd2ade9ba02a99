"""The task store: schema (tables), engines (engine), migrations (migrate) and all SQL
(repository). `open_store` is the one way in for the rest of foxbatch."""

from __future__ import annotations

from foxbatch.store.engine import make_engine
from foxbatch.store.migrate import ensure_current
from foxbatch.store.repository import Repository


def open_store(url: str, *, migrate: bool = True) -> Repository:
    """Open the store at `url`, upgrading an older schema (refusing a newer one) first."""
    engine = make_engine(url)
    if migrate:
        try:
            ensure_current(engine)
        except BaseException:
            engine.dispose()
            raise
    return Repository(engine)


__all__ = ["Repository", "open_store"]
