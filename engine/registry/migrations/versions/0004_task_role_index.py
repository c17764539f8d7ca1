"""task (role, status) index for worklists filtered by role

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:40:00

The worklist query (api/routers/worklists.py) filters tasks by status and usually by role. With only
(status, due) to go by, SQLite read every open task in the registry and then dropped those of other
roles and MDTs; with (role, status) it reads one role's open tasks (P3 benchmark, issue 8).
"""
from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.create_index('ix_task_role_status', ['role', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index('ix_task_role_status')
