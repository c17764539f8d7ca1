"""access_log hash chain: prev_hash, row_hash (tamper evidence)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 04:00:00

Each access_log row gets SHA-256(previous row's hash + its canonical content)
(engine/registry/logchain.py); existing rows are chained in id order here, so
`carepath audit verify-log` checks the whole log. (Issue 14 item 9.)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.registry.logchain import backfill

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('row_hash', sa.String(length=64), nullable=True))
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":  # nobody appends while the existing rows are chained
        conn.execute(sa.text("LOCK TABLE access_log IN EXCLUSIVE MODE"))
    backfill(conn)
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('row_hash', existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.drop_column('row_hash')
        batch_op.drop_column('prev_hash')
