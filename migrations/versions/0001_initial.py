"""Initial schema: jobs, items (one per input row) and attempts (one per submission).

Revision ID: 0001
Revises:
Create Date: 2026-11-25 21:16:47.651438
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('defaults', sa.Text(), server_default='{}', nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('name', name=op.f('uq_jobs_name'))
    )
    op.create_table('items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('row_key', sa.Text(), nullable=False),
    sa.Column('row_index', sa.BigInteger(), nullable=False),
    sa.Column('input', sa.Text(), nullable=False),
    sa.Column('request', sa.Text(), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('free_attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('in_doubt_resubmits', sa.Integer(), server_default='0', nullable=False),
    sa.Column('polls', sa.Integer(), server_default='0', nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_token', sa.String(length=32), nullable=True),
    sa.Column('lease_until', sa.Double(), nullable=True),
    sa.Column('next_attempt_at', sa.Double(), nullable=True),
    sa.Column('next_poll_at', sa.Double(), nullable=True),
    sa.Column('task_id', sa.String(length=200), nullable=True),
    sa.Column('submitted_at', sa.Double(), nullable=True),
    sa.Column('finished_at', sa.Double(), nullable=True),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('finish_reason', sa.String(length=64), nullable=True),
    sa.Column('result_model', sa.String(length=200), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('completion_tokens', sa.Integer(), nullable=True),
    sa.Column('total_tokens', sa.Integer(), nullable=True),
    sa.Column('error_code', sa.String(length=200), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_items_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_items')),
    sa.UniqueConstraint('job_id', 'row_key', name=op.f('uq_items_job_id_row_key'))
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index('ix_items_job_order', ['job_id', 'row_index'], unique=False)
        batch_op.create_index('ix_items_job_status', ['job_id', 'status'], unique=False)
        batch_op.create_index('ix_items_pending_due', ['next_poll_at'], unique=False, sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
        batch_op.create_index('ix_items_queued_due', ['next_attempt_at', 'row_index'], unique=False, sqlite_where=sa.text("status = 'queued'"), postgresql_where=sa.text("status = 'queued'"))
        batch_op.create_index('ix_items_submitting_lease', ['lease_until'], unique=False, sqlite_where=sa.text("status = 'submitting'"), postgresql_where=sa.text("status = 'submitting'"))

    op.create_table('attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('task_id', sa.String(length=200), nullable=True),
    sa.Column('sent_at', sa.Double(), nullable=True),
    sa.Column('finished_at', sa.Double(), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('in_doubt', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_attempts_item_id_items'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attempts')),
    sa.UniqueConstraint('item_id', 'number', name=op.f('uq_attempts_item_id_number'))
    )
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.create_index('ix_attempts_task_id', ['task_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_attempts_task_id')

    op.drop_table('attempts')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_submitting_lease', sqlite_where=sa.text("status = 'submitting'"), postgresql_where=sa.text("status = 'submitting'"))
        batch_op.drop_index('ix_items_queued_due', sqlite_where=sa.text("status = 'queued'"), postgresql_where=sa.text("status = 'queued'"))
        batch_op.drop_index('ix_items_pending_due', sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
        batch_op.drop_index('ix_items_job_status')
        batch_op.drop_index('ix_items_job_order')

    op.drop_table('items')
    op.drop_table('jobs')
