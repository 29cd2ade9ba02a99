"""foxbatch: run large batches of LLM prompts through the FoxAPI asynchronous task API."""

from __future__ import annotations

__all__: list[str] = []
