"""feedback and muted names

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:12:04.417231

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import papermail.models


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('feedback',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('paper_id', sa.String(length=64), nullable=False),
    sa.Column('direction', sa.Enum('more', 'less', name='feedback_direction', native_enum=False, length=16), nullable=False),
    sa.Column('created_at', papermail.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['paper_id'], ['papers.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subscriber_id', 'paper_id', name='uq_feedback_subscriber_paper')
    )
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.create_index('ix_feedback_subscriber_created', ['subscriber_id', 'created_at'], unique=False)

    # Existing subscribers have muted nobody: the server default fills their rows.
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('muted_authors', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('muted_organizations', sa.JSON(), server_default='[]', nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    # A native DROP COLUMN (SQLite 3.35+), never batch mode's copy-and-swap: dropping the
    # old subscribers table with foreign keys on would cascade to every delivery row.
    with op.batch_alter_table('subscribers', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('muted_organizations')
        batch_op.drop_column('muted_authors')

    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index('ix_feedback_subscriber_created')

    op.drop_table('feedback')
