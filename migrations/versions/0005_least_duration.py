"""items.least_duration: the shortest duration a running task's progress allowed when it was
last looked at (seconds). What a later run learns its first looks from: a row's time from
submit to result is only an upper bound when its task was done at the first look.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 04:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('least_duration', sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('least_duration')
