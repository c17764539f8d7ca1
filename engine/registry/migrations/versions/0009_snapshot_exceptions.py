"""audit_snapshot.exceptions: denominator exceptions kept apart in reporting snapshots

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 05:20:00

Measures with a denominator-exceptions step (the eCQM decks; QOF's personalised care adjustments)
report exceptions beside achievement and leave them out of the rate; snapshots store the count.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_snapshot") as batch:
        batch.add_column(sa.Column("exceptions", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("audit_snapshot") as batch:
        batch.drop_column("exceptions")
