"""user endpoints of multi-user endpoints, authentication policies

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('user_endpoint_config', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('auth_policy', sa.JSON(), nullable=True))
        batch_op.create_index('ix_endpoints_parent_id', ['parent_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.drop_index('ix_endpoints_parent_id')
        batch_op.drop_column('auth_policy')
        batch_op.drop_column('user_endpoint_config')
        batch_op.drop_column('parent_id')
