"""Page speed (issue 16): an index on evaluated_at, the risk tier level as a column, the worklist's index

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 16:00:00

- `ix_patient_evaluation_evaluated_at`: the audit page keeps its figures until a stored evaluation changes
  (engine/app/audit_cache.py); the latest `evaluated_at` is part of what it checks on every request, without
  an index a scan of every stored evaluation.
- `patient_evaluation.tier_level`: the stored result's `tier.level` (NULL when it has none), filled here from
  the stored JSON, then kept by the store path (engine.app.service._store_evaluation); with the index
  `ix_patient_evaluation_patient_tier` (patient_id, tier_level) the worklist reads its patients' risk tiers
  from the index instead of every stored result's JSON (0.25 s of the page's 0.4 s for an MDT of 2,472).
- `ix_task_worklist`: every task column the worklist page filters and counts by, so its dozen facet counts
  read the index alone, not the task rows with their why and evidence (10-25 times faster at 1,771 tasks).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

WORKLIST_COLUMNS = ["status", "due", "patient_id", "provider", "priority", "role", "protocol", "team"]


def upgrade() -> None:
    op.create_index("ix_patient_evaluation_evaluated_at", "patient_evaluation", ["evaluated_at"])
    op.add_column("patient_evaluation", sa.Column("tier_level", sa.Integer(), nullable=True))  # no table copy
    e = sa.table("patient_evaluation", sa.column("tier_level", sa.Integer), sa.column("result", sa.JSON))
    level = e.c.result[("tier", "level")].as_integer()
    op.execute(sa.update(e).values(tier_level=level).where(level.is_not(None)))
    op.create_index("ix_patient_evaluation_patient_tier", "patient_evaluation", ["patient_id", "tier_level"])
    op.create_index("ix_task_worklist", "task", WORKLIST_COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_task_worklist", table_name="task")
    op.drop_index("ix_patient_evaluation_patient_tier", table_name="patient_evaluation")
    with op.batch_alter_table("patient_evaluation") as batch:
        batch.drop_column("tier_level")
    op.drop_index("ix_patient_evaluation_evaluated_at", table_name="patient_evaluation")
