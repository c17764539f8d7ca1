"""patient_measure.value: each patient's number of a measure with `value:`

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 13:20:00

(Issue 19.) Outcome measures (`value:` in the protocol language, e.g. pilot-outcomes' emergency admissions per
person in a cohort) give each counted patient a number. The stored evaluation (JSON) already holds it; the
per-measure rows now keep it too, so the registry's stored results carry the value (NULL: no value, not
counted, or a number it needs is missing — never 0 in its place). Filled from the stored evaluations.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patient_measure") as batch:
        batch.add_column(sa.Column("value", sa.Float(), nullable=True))
    from engine.registry.measure_results import backfill_values

    backfill_values(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("patient_measure") as batch:
        batch.drop_column("value")
