"""The task store's schema (SQLAlchemy 2 Core). Alembic migrations must produce exactly this.

Times are UNIX seconds as floats: portable between SQLite and PostgreSQL and cheap to compare.
JSON documents (input fields, request, result) are stored as text that foxbatch serialises itself.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
IdType = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "jobs",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("source", Text, nullable=True),
    Column("defaults", Text, nullable=False, server_default="{}"),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

items = Table(
    "items",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("job_id", IdType, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("row_key", Text, nullable=False),
    Column("row_index", BigInteger, nullable=False),
    Column("input", Text, nullable=False),
    Column("request", Text, nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("model", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # Attempts that did not use the retry budget (429, never sent): budget = attempts - free.
    Column("free_attempts", Integer, nullable=False, server_default="0"),
    Column("in_doubt_resubmits", Integer, nullable=False, server_default="0"),
    Column("polls", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("lease_until", Double, nullable=True),
    Column("next_attempt_at", Double, nullable=True),
    Column("next_poll_at", Double, nullable=True),
    Column("task_id", String(200), nullable=True),
    Column("submitted_at", Double, nullable=True),
    Column("finished_at", Double, nullable=True),
    # The shortest duration the task's progress allowed at its last look (seconds): what the
    # next run's first looks are learned from (migration 0005).
    Column("least_duration", Double, nullable=True),
    Column("result", Text, nullable=True),
    Column("output", Text, nullable=True),
    Column("finish_reason", String(64), nullable=True),
    Column("result_model", String(200), nullable=True),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("total_tokens", Integer, nullable=True),
    Column("error_code", String(200), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    UniqueConstraint("job_id", "row_key"),
    # Export and status walk a job in input order.
    Index("ix_items_job_order", "job_id", "row_index"),
    # Counts by state, a job's rows in one state, and the due queued rows of a job in order
    # (claims): one index for all three, so an ingested row writes one index less.
    Index("ix_items_job_status_due", "job_id", "status", "next_attempt_at", "row_index"),
    # The other hot paths only ever look at rows in flight: these partial indexes hold just
    # those rows, so "what is due now" and resuming cost O(rows in flight), not O(rows).
    Index(
        "ix_items_pending_due", "next_poll_at",
        sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'"),
    ),
    Index(
        "ix_items_submitting_lease", "lease_until",
        sqlite_where=text("status = 'submitting'"),
        postgresql_where=text("status = 'submitting'"),
    ),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("item_id", IdType, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("worker", String(200), nullable=True),
    Column("task_id", String(200), nullable=True),
    Column("sent_at", Double, nullable=True),
    Column("finished_at", Double, nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("in_doubt", Boolean, nullable=False, server_default=text("false")),
    Column("http_status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    UniqueConstraint("item_id", "number"),
    Index("ix_attempts_task_id", "task_id"),
)

# One row per `foxbatch poll`/`run` process that ever served this store: written when it starts,
# on every heartbeat and when it stops cleanly. A row whose heartbeat is older than its
# lease_seconds belongs to a dead worker (its claimed rows are being taken over).
workers = Table(
    "workers",
    metadata,
    Column("id", String(200), primary_key=True),  # the lease_owner its claims carry
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    Column("stopped_at", Double, nullable=True),
    Column("lease_seconds", Double, nullable=False),
    Column("jobs", Text, nullable=True),  # JSON list of job ids; NULL: every job
)

# The requests/s budget of one API key, shared by every worker using it: a GCRA "theoretical
# arrival time". A worker leases n tokens by moving `tat` n/rate seconds ahead in one UPDATE;
# its tokens fall due one every 1/rate seconds from the old `tat`.
rate_budgets = Table(
    "rate_budgets",
    metadata,
    Column("key", String(64), primary_key=True),  # a fingerprint of base URL + key, never the key
    Column("tat", Double, nullable=False),
)
