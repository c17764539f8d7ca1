"""Structured task outcomes and the clinical roles a user works in (issue 16 item 2)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 09:40:00

- `task.outcome`: the coded outcome a person gave when completing a task (engine/app/task_outcomes.py:
  done / not-done / declined-by-patient / not-appropriate); `task.closed_by`: who completed or declined it.
- `app_user.clinical_roles`: the care roles a person works in (gp, practice-nurse, care-coordinator ...),
  the roles tasks are assigned to by the role agreements; only those may complete a task for that role.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("outcome", sa.String(length=30), nullable=True))
        batch.add_column(sa.Column("closed_by", sa.String(length=100), nullable=True))
    with op.batch_alter_table("app_user") as batch:
        batch.add_column(sa.Column("clinical_roles", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("app_user") as batch:
        batch.drop_column("clinical_roles")
    with op.batch_alter_table("task") as batch:
        batch.drop_column("closed_by")
        batch.drop_column("outcome")
