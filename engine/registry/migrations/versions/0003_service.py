"""service: users, access log, audit snapshots, MDT outcomes, protocol publications

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 15:41:00.180375
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('access_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('username', sa.String(length=100), nullable=True),
    sa.Column('role', sa.String(length=30), nullable=True),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('method', sa.String(length=10), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('resource', sa.String(length=100), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('patients', sa.JSON(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.create_index('ix_access_log_at', ['at'], unique=False)
        batch_op.create_index('ix_access_log_username', ['username'], unique=False)

    op.create_table('app_user',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=True),
    sa.Column('role', sa.String(length=30), nullable=False),
    sa.Column('mdt', sa.String(length=100), nullable=True),
    sa.Column('practice', sa.String(length=6), nullable=True),
    sa.Column('locality', sa.String(length=100), nullable=True),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('token_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('last_login_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username', name='uq_app_user_username')
    )
    op.create_table('audit_snapshot',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('taken_at', sa.DateTime(), nullable=False),
    sa.Column('taken_by', sa.String(length=100), nullable=False),
    sa.Column('protocol', sa.String(length=100), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('measure', sa.String(length=100), nullable=False),
    sa.Column('unit_kind', sa.String(length=20), nullable=False),
    sa.Column('unit', sa.String(length=100), nullable=False),
    sa.Column('initial_population', sa.Integer(), nullable=False),
    sa.Column('denominator', sa.Integer(), nullable=False),
    sa.Column('exclusions', sa.Integer(), nullable=False),
    sa.Column('numerator', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('as_of', 'protocol', 'measure', 'unit_kind', 'unit', name='uq_audit_snapshot')
    )
    op.create_table('protocol_publication',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=100), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('published_by', sa.String(length=100), nullable=False),
    sa.Column('published_at', sa.DateTime(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('protocol', 'version', name='uq_protocol_publication')
    )
    op.create_table('service_key',
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('value', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('mdt_outcome',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mdt', sa.String(length=100), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('meeting_date', sa.Date(), nullable=False),
    sa.Column('outcome', sa.Text(), nullable=False),
    sa.Column('actions', sa.Text(), nullable=True),
    sa.Column('recorded_by', sa.String(length=100), nullable=False),
    sa.Column('recorded_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name='fk_mdt_outcome_patient', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('mdt_outcome', schema=None) as batch_op:
        batch_op.create_index('ix_mdt_outcome_mdt', ['mdt', 'meeting_date'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('mdt_outcome', schema=None) as batch_op:
        batch_op.drop_index('ix_mdt_outcome_mdt')

    op.drop_table('mdt_outcome')
    op.drop_table('service_key')
    op.drop_table('protocol_publication')
    op.drop_table('audit_snapshot')
    op.drop_table('app_user')
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.drop_index('ix_access_log_username')
        batch_op.drop_index('ix_access_log_at')

    op.drop_table('access_log')
