"""Job reports for `foxbatch status` and `foxbatch jobs`: rows per state, attempts, in-doubt
resubmissions, tokens, throughput, ETA and the most common errors, read from the store.

Throughput is measured in the store, so it holds for every worker together: while a job has
work left, rows finished in the last RECENT_WINDOW seconds per second; once it is done, rows
finished per second from its first submit to its last result. The ETA is the rows left at the
recent rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from foxbatch.models import ACTIVE_STATUSES
from foxbatch.store import Repository
from foxbatch.store.records import Job, JobStats

RECENT_WINDOW = 300.0
TOP_ERRORS = 5


@dataclass(frozen=True)
class JobReport:
    """One job as `status` shows it, at time `now`."""

    job: Job
    stats: JobStats
    now: float

    @property
    def total(self) -> int:
        """Rows in the job."""
        return sum(self.stats.counts.values())

    @property
    def active(self) -> int:
        """Rows queued, submitting or pending: work left."""
        return sum(self.stats.counts[s] for s in ACTIVE_STATUSES)

    @property
    def done(self) -> bool:
        """True when no row has work left."""
        return self.active == 0

    @property
    def rows_per_second(self) -> float | None:
        """Rows finished per second (see the module docstring); None before any submit."""
        first = self.stats.first_submitted_at
        if first is None:
            return None
        if self.done:
            finished = self.stats.counts["succeeded"] + self.stats.counts["failed"]
            span = (self.stats.last_finished_at or first) - first
            return finished / span if span > 0 else None
        window = min(RECENT_WINDOW, self.now - first)
        return self.stats.finished_since / window if window > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        """Seconds until the rows left are finished at the recent rate; 0 when done."""
        if self.done:
            return 0.0
        rate = self.rows_per_second
        return self.active / rate if rate else None

    def to_dict(self) -> dict[str, Any]:
        """The report as `status --json` prints it."""
        stats = self.stats
        rate = self.rows_per_second
        return {
            "job": self.job.name, "total": self.total, "counts": dict(stats.counts),
            "done": self.done, "attempts": stats.attempts,
            "in_doubt_resubmits": stats.in_doubt_resubmits,
            "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens},
            "rows_per_second": None if rate is None else round(rate, 3),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "errors": [{"code": e.code, "count": e.count, "example": e.example}
                       for e in stats.errors],
            "created_at": self.job.created_at,
            "age_seconds": round(self.now - self.job.created_at, 1),
        }


def job_report(repo: Repository, job: Job, *, now: float | None = None) -> JobReport:
    """The report of one job, read now."""
    now = time.time() if now is None else now
    stats = repo.job_stats(job.id, since=now - RECENT_WINDOW, top_errors=TOP_ERRORS)
    return JobReport(job, stats, now)
