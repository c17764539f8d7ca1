"""evaluation outbox (pending_evaluation) and per-patient data problems (data_problem)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 03:30:00

Ingest marks the patients it changed in `pending_evaluation` in the same transaction as their facts,
and evaluation removes the mark, so a crash between the two leaves the patient pending (drained on
the next start), never stored-but-unevaluated (issue 14, item 1). `data_problem` records an
evaluation that failed for one patient instead of failing everyone else's (issue 14, item 2).
See engine/registry/pending.py.

Patients stored by earlier versions without any evaluation are not queued here (a benchmark
registry may hold hundreds of thousands on purpose); sending their delivery again queues them.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pending_evaluation',
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('queued_at', sa.DateTime(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name='fk_pending_evaluation_patient', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_id')
    )
    with op.batch_alter_table('pending_evaluation', schema=None) as batch_op:
        batch_op.create_index('ix_pending_evaluation_queued', ['queued_at'], unique=False)

    op.create_table('data_problem',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('protocol', sa.String(length=100), nullable=True),
    sa.Column('fact_source_system', sa.String(length=100), nullable=True),
    sa.Column('fact_source_id', sa.String(length=255), nullable=True),
    sa.Column('fact_problem', sa.Text(), nullable=True),
    sa.Column('detected_at', sa.DateTime(), nullable=False),
    sa.Column('resolved_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name='fk_data_problem_patient', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('data_problem', schema=None) as batch_op:
        batch_op.create_index('ix_data_problem_patient', ['patient_id', 'resolved_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('data_problem', schema=None) as batch_op:
        batch_op.drop_index('ix_data_problem_patient')
    op.drop_table('data_problem')
    with op.batch_alter_table('pending_evaluation', schema=None) as batch_op:
        batch_op.drop_index('ix_pending_evaluation_queued')
    op.drop_table('pending_evaluation')
