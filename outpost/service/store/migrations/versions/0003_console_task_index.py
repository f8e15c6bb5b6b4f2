"""tasks by endpoint and time, for the web console's recent tasks and charts

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        'ix_tasks_endpoint_created', 'tasks', ['endpoint_id', 'created_at', 'completed_at']
    )


def downgrade() -> None:
    op.drop_index('ix_tasks_endpoint_created', table_name='tasks')
