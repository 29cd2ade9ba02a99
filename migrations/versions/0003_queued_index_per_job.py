"""The due-queued index leads with job_id: claiming for one job reads just the rows it claims.

With (next_attempt_at, row_index) alone, a claim filtered by job made SQLite sort every queued
row of the job (hundreds of milliseconds per claim at 100k queued rows).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 23:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_queued_due')
        batch_op.create_index('ix_items_queued_due', ['job_id', 'next_attempt_at', 'row_index'],
                              unique=False, sqlite_where=QUEUED, postgresql_where=QUEUED)


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_queued_due')
        batch_op.create_index('ix_items_queued_due', ['next_attempt_at', 'row_index'],
                              unique=False, sqlite_where=QUEUED, postgresql_where=QUEUED)
