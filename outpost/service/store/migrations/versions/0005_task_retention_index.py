"""index on tasks.completed_at, for retention purges and latency metrics

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tasks_completed_at', 'tasks', ['completed_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_tasks_completed_at', table_name='tasks')
