"""bounce events: late bounces and complaints

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:20:41.318204

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import papermail.models


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # A new table only: existing rows are untouched. Events go with an erased subscriber
    # (CASCADE: they carry the address); a deleted delivery leaves its events unlinked.
    op.create_table('bounce_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('received_at', papermail.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.Enum('hard', 'soft', 'complaint', name='bounce_kind', native_enum=False, length=16), nullable=False),
    sa.Column('source', sa.Enum('smtp', 'imap', 'pop3', 'ses', 'postmark', 'session', name='bounce_source', native_enum=False, length=16), nullable=False),
    sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('diagnostic', sa.String(length=500), nullable=True),
    sa.Column('dedup_key', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedup_key')
    )
    with op.batch_alter_table('bounce_events', schema=None) as batch_op:
        batch_op.create_index('ix_bounce_events_received_at', ['received_at'], unique=False)
        batch_op.create_index('ix_bounce_events_subscriber_received', ['subscriber_id', 'received_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('bounce_events', schema=None) as batch_op:
        batch_op.drop_index('ix_bounce_events_subscriber_received')
        batch_op.drop_index('ix_bounce_events_received_at')

    op.drop_table('bounce_events')
