"""reader blend weight and arXiv categories

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:41:27.118402

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Existing subscribers get the default blend (balanced) and follow no category: the
    # server defaults fill their rows. Adding columns is a native ALTER on SQLite too.
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('relevance_weight', sa.Float(), server_default='0.5', nullable=False))
        batch_op.add_column(sa.Column('arxiv_categories', sa.JSON(), server_default='[]', nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    # A native DROP COLUMN (SQLite 3.35+), never batch mode's copy-and-swap: dropping the
    # old subscribers table with foreign keys on would cascade to every delivery row.
    with op.batch_alter_table('subscribers', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('arxiv_categories')
        batch_op.drop_column('relevance_weight')
