"""The task store: schema (tables), engines (engine), migrations (migrate) and all SQL
(repository, whose queries live by concern in ingesting, claims, reports and workers, over sql).
`open_store` is the one way in for the rest of foxbatch.

SQLAlchemy is imported on first use (`open_store`, `Repository`), not with the package: the
ingest reader process needs the store's records and nothing else, and starts three times
faster without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from foxbatch.store.repository import Repository

__all__ = ["Repository", "open_store"]


def open_store(url: str, *, migrate: bool = True) -> Repository:
    """Open the store at `url`, upgrading an older schema (refusing a newer one) first."""
    from foxbatch.store.engine import make_engine
    from foxbatch.store.migrate import ensure_current
    from foxbatch.store.repository import Repository

    engine = make_engine(url)
    if migrate:
        try:
            ensure_current(engine)
        except BaseException:
            engine.dispose()
            raise
    return Repository(engine)


def __getattr__(name: str) -> Any:
    """`Repository`, imported when first asked for."""
    if name == "Repository":
        from foxbatch.store.repository import Repository

        return Repository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
