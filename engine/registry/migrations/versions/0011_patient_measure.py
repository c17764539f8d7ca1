"""patient_measure: each stored evaluation's measures as counts per population step

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 06:40:00

(Issue 16: the audit page decoded every stored evaluation's JSON on each request, 10-20 s with a
20,000-patient registry.) The audit figures are now SQL sums over this table, which the store path
keeps with `patient_evaluation`; this migration fills it from the evaluations already stored.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('patient_measure',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=100), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('measure', sa.String(length=200), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('initial_population', sa.Integer(), nullable=False),
    sa.Column('denominator', sa.Integer(), nullable=False),
    sa.Column('exclusions', sa.Integer(), nullable=False),
    sa.Column('exceptions', sa.Integer(), nullable=False),
    sa.Column('numerator', sa.Integer(), nullable=False),
    sa.Column('cannot_determine', sa.Integer(), nullable=False),
    sa.Column('missing_codelists', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name='fk_patient_measure_patient', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('patient_measure', schema=None) as batch_op:
        batch_op.create_index('ix_patient_measure_patient_protocol', ['patient_id', 'protocol'], unique=False)
    from engine.registry.measure_results import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table('patient_measure', schema=None) as batch_op:
        batch_op.drop_index('ix_patient_measure_patient_protocol')
    op.drop_table('patient_measure')
