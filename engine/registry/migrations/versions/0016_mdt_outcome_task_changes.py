"""MDT outcomes that reassign or close existing tasks (issue 16 item 6)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 13:00:00

- `mdt_outcome.task_changes`: the patient's existing tasks the case conference reassigned or closed with
  that outcome (engine/app/mdt_actions.py apply_task_changes): task id, title, the change, from / to or
  the coded outcome, and the words; the tasks' own history keeps who and when as well.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mdt_outcome") as batch:
        batch.add_column(sa.Column("task_changes", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("mdt_outcome") as batch:
        batch.drop_column("task_changes")
