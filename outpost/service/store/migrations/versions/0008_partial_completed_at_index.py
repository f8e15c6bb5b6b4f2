"""tasks.completed_at index on SQLite: finished tasks only

A task's insert no longer touches this index (its completed_at is NULL), and its
completion no longer moves an entry out of the NULLs: one index page less written per
task insert and per result. The queries that use it (retention purges, the console's
charts) compare completed_at, which implies it is not NULL, so they still use it.
PostgreSQL keeps its plain index (the models name no PostgreSQL condition, so that a
SQLite service does not load SQLAlchemy's PostgreSQL dialect).

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_FINISHED = sa.text('completed_at IS NOT NULL')


def upgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    op.drop_index('ix_tasks_completed_at', table_name='tasks')
    op.create_index(
        'ix_tasks_completed_at',
        'tasks',
        ['completed_at'],
        unique=False,
        sqlite_where=_FINISHED,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    op.drop_index('ix_tasks_completed_at', table_name='tasks')
    op.create_index('ix_tasks_completed_at', 'tasks', ['completed_at'], unique=False)
