"""foxbatch: run large batches of LLM prompts through the FoxAPI asynchronous task API.

The public Python API is `run_dataframe` (foxbatch.notebook); it is loaded on first use, so
that `import foxbatch.<module>` (the CLI, the ingest reader process) stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from foxbatch.notebook import run_dataframe

__all__ = ["run_dataframe"]


def __getattr__(name: str) -> Any:
    if name == "run_dataframe":
        from foxbatch.notebook import run_dataframe

        return run_dataframe
    raise AttributeError(f"module 'foxbatch' has no attribute {name!r}")
