"""impact_run: background impact previews of draft protocols with their progress and result

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 04:30:00

(Issue 16 item 5: the web impact preview took 33 s with no progress.)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('impact_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=100), nullable=False),
    sa.Column('from_version', sa.String(length=40), nullable=True),
    sa.Column('to_version', sa.String(length=40), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('impact_run', schema=None) as batch_op:
        batch_op.create_index('ix_impact_run_status', ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('impact_run', schema=None) as batch_op:
        batch_op.drop_index('ix_impact_run_status')
    op.drop_table('impact_run')
