"""Settings: command-line flags > environment (FOXBATCH_*, FOXAPI_*) > defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_DB_URL = "sqlite:///foxbatch.db"
DEFAULT_BASE_URL = "https://api.foxapi.cc"


@dataclass(frozen=True)
class Settings:
    """Where the store and the API are, and how to talk to them.

    `api_key` is kept out of `repr` so that it never lands in a log line or a traceback.
    """

    db_url: str = DEFAULT_DB_URL
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    log_json: bool = False
    verbosity: int = 0

    @classmethod
    def load(cls, *, db_url: str | None = None, base_url: str | None = None,
             log_json: bool = False, verbosity: int = 0,
             environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from explicit values (flags), then the environment, then defaults."""
        env = os.environ if environ is None else environ
        return cls(
            db_url=db_url or env.get("FOXBATCH_DB") or DEFAULT_DB_URL,
            base_url=(base_url or env.get("FOXAPI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            api_key=env.get("FOXAPI_API_KEY") or None,
            log_json=log_json,
            verbosity=verbosity,
        )


def redact(text: str, secret: str | None) -> str:
    """Return `text` with every occurrence of `secret` replaced, for logs and error messages."""
    if not secret:
        return text
    return text.replace(secret, "sk-***")
