"""audit_snapshot.cannot_determine: patients whose measure result needs a codelist not supplied

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 09:50:00

(Issue 13.) A measure resting on a declared cluster the site has not supplied is "cannot determine" for a
patient: left out of every population count and of the rate, and counted apart, as the live audit
(`patient_measure.cannot_determine`) already does. Reporting snapshots now store that count too. Snapshots
taken before this migration have 0 (the count was not kept).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_snapshot") as batch:
        batch.add_column(sa.Column("cannot_determine", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("audit_snapshot") as batch:
        batch.drop_column("cannot_determine")
