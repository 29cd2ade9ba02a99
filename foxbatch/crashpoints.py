"""Named crash points, for proving crash safety: `FOXBATCH_CRASH_AT=point[:n]` makes the
process exit hard (os._exit, no cleanup, like SIGKILL) the n-th time it reaches `point`.

Points: after_claim, after_post_before_record, after_record_before_commit, mid_group_commit,
during_export. The variable is read once, at the first crash point a process reaches; unset
(the normal case), a crash point then costs a cached call.
"""

from __future__ import annotations

import functools
import os

ENV = "FOXBATCH_CRASH_AT"
EXIT_CODE = 137  # what a shell reports for SIGKILL
POINTS = frozenset({"after_claim", "after_post_before_record", "after_record_before_commit",
                    "mid_group_commit", "during_export"})

_hits: dict[str, int] = {}


@functools.cache
def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise SystemExit(f"{ENV}={spec}: unknown crash point (known: {', '.join(sorted(POINTS))})")
    return name, int(count) if count else 1


def crash_point(name: str) -> None:
    """Exit at once if FOXBATCH_CRASH_AT names this point and its hit count is reached."""
    target = _target()
    if target is None or target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= target[1]:
        os._exit(EXIT_CODE)
