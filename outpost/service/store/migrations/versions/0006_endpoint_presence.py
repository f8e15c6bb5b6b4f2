"""endpoint presence: which replica holds an endpoint's channel (scale-out)

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'endpoint_presence',
        sa.Column('endpoint_id', sa.String(length=36), nullable=False),
        sa.Column('replica_id', sa.String(length=36), nullable=False),
        sa.Column('session_id', sa.String(length=36), nullable=False),
        sa.Column('last_seen', sa.Float(), nullable=False),
        sa.Column('threshold', sa.Float(), nullable=False),
        sa.Column('load', sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint('endpoint_id'),
    )


def downgrade() -> None:
    op.drop_table('endpoint_presence')
