"""arXiv metadata on papers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 15:02:11.530114

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Papers stored before arXiv was a source have no categories: the server default
    # fills their rows. Adding columns is a native ALTER on SQLite too (no copy-and-swap).
    with op.batch_alter_table('papers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('categories', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('arxiv_comment', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('journal_ref', sa.Text(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    # A native DROP COLUMN (SQLite 3.35+), never batch mode's copy-and-swap: dropping the
    # old papers table with foreign keys on would cascade to every snapshot and feedback row.
    with op.batch_alter_table('papers', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('journal_ref')
        batch_op.drop_column('arxiv_comment')
        batch_op.drop_column('categories')
