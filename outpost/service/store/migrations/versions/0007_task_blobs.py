"""task blobs: large payloads and results out of the task row

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tasks stored before this keep their payload and result in the row; readers take
    # the row's value first, then this table's.
    op.create_table(
        'task_blobs',
        sa.Column('task_id', sa.String(length=36), nullable=False),
        sa.Column('kind', sa.String(length=1), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('task_id', 'kind'),
    )


def downgrade() -> None:
    # Put the values back into their rows first: nothing stored may be lost.
    conn = op.get_bind()
    blobs = sa.table(
        'task_blobs', sa.column('task_id', sa.String), sa.column('kind', sa.String),
        sa.column('data', sa.LargeBinary),
    )
    tasks = sa.table(
        'tasks', sa.column('id', sa.String), sa.column('payload', sa.Text),
        sa.column('result', sa.Text),
    )
    for kind, column in (('p', 'payload'), ('r', 'result')):
        rows = conn.execute(sa.select(blobs.c.task_id, blobs.c.data).where(blobs.c.kind == kind))
        for task_id, data in rows.fetchall():
            text = bytes(data).decode('utf-8', 'surrogatepass')
            conn.execute(
                tasks.update().where(tasks.c.id == task_id, tasks.c[column].is_(None)),
                {column: text},
            )
    op.drop_table('task_blobs')
