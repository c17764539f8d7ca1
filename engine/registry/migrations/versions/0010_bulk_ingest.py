"""bulk_ingest_run, bulk_ingest_refusal: FHIR Bulk Data (NDJSON) loads, their checkpoint and refused lines

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-10 09:00:00

(Issue 17 item 2: bulk ingest, resumable after a kill; engine/registry/bulk.py.)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bulk_ingest_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('source_system', sa.String(length=100), nullable=False),
    sa.Column('files', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('owner', sa.String(length=200), nullable=False),
    sa.Column('checkpoint', sa.String(length=255), nullable=True),
    sa.Column('patients_total', sa.Integer(), nullable=False),
    sa.Column('patients_done', sa.Integer(), nullable=False),
    sa.Column('lines_total', sa.Integer(), nullable=False),
    sa.Column('lines_loaded', sa.Integer(), nullable=False),
    sa.Column('facts_added', sa.Integer(), nullable=False),
    sa.Column('facts_updated', sa.Integer(), nullable=False),
    sa.Column('facts_unchanged', sa.Integer(), nullable=False),
    sa.Column('resumed', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('bulk_ingest_run', schema=None) as batch_op:
        batch_op.create_index('ix_bulk_ingest_run_fingerprint', ['fingerprint'], unique=False)
    op.create_table('bulk_ingest_refusal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('file', sa.String(length=255), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('resource', sa.String(length=255), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['bulk_ingest_run.id'], name='fk_bulk_ingest_refusal_run', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'file', 'line', name='uq_bulk_ingest_refusal_line')
    )


def downgrade() -> None:
    op.drop_table('bulk_ingest_refusal')
    with op.batch_alter_table('bulk_ingest_run', schema=None) as batch_op:
        batch_op.drop_index('ix_bulk_ingest_run_fingerprint')
    op.drop_table('bulk_ingest_run')
