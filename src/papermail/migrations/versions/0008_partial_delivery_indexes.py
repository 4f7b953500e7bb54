"""partial delivery indexes: unsent rows by status, sent rows by time

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 15:05:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

UNSENT = sa.text("status <> 'sent'")
SENT = sa.text("sent_at IS NOT NULL")


def upgrade() -> None:
    """Upgrade schema."""
    # Each index is rebuilt over the rows it keeps: one read of the table and a small
    # write; no row changes. Sends wait for their marks while it runs (as they do for the
    # compose file's one-shot migration, which runs before any worker starts).
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_status_next')
        batch_op.drop_index('ix_deliveries_sent_at')
        batch_op.create_index(
            'ix_deliveries_status_next', ['status', 'next_attempt_at'], unique=False,
            postgresql_where=UNSENT, sqlite_where=UNSENT,
        )
        batch_op.create_index(
            'ix_deliveries_sent_at', ['sent_at'], unique=False,
            postgresql_where=SENT, sqlite_where=SENT,
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_sent_at')
        batch_op.drop_index('ix_deliveries_status_next')
        batch_op.create_index('ix_deliveries_status_next', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_deliveries_sent_at', ['sent_at'], unique=False)
