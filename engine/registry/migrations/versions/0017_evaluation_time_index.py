"""Index on patient_evaluation.evaluated_at: the latest store in one look-up (issue 16, audit page speed)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 16:00:00

The audit page keeps its figures until a stored evaluation changes (engine/app/audit_cache.py); the latest
`evaluated_at` is part of what it checks on every request. Without an index that is a scan of every stored
evaluation (seconds with a 50,000-patient MDT evaluated).
"""
from __future__ import annotations

from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_patient_evaluation_evaluated_at", "patient_evaluation", ["evaluated_at"])


def downgrade() -> None:
    op.drop_index("ix_patient_evaluation_evaluated_at", table_name="patient_evaluation")
