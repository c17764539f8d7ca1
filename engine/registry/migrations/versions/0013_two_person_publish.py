"""Two-person publish: protocol drafts awaiting approval, and who approved each publication (issue 16 item 9)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 10:05:00

- `protocol_draft`: a version submitted by its author; a different clinical lead approves it, which
  publishes it (engine/app/approvals.py).
- `protocol_publication.approved_by`: the second person (published_by stays the author).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('protocol_draft',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=100), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('yaml', sa.Text(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('submitted_by', sa.String(length=100), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=False), nullable=False),
    sa.Column('decided_by', sa.String(length=100), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=False), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_protocol_draft_status', 'protocol_draft', ['status'], unique=False)
    with op.batch_alter_table("protocol_publication") as batch:
        batch.add_column(sa.Column("approved_by", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("protocol_publication") as batch:
        batch.drop_column("approved_by")
    op.drop_index('ix_protocol_draft_status', table_name='protocol_draft')
    op.drop_table('protocol_draft')
