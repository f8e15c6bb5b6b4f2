"""identities signed in through OpenID Connect; tokens with expiry and scopes

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('issuer', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('subject', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_identities_issuer_subject', ['issuer', 'subject'], unique=True)
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('scopes', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('description', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('description')
        batch_op.drop_column('scopes')
        batch_op.drop_column('expires_at')
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.drop_index('ix_identities_issuer_subject')
        batch_op.drop_column('subject')
        batch_op.drop_column('issuer')
