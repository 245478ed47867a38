"""The store's epoch (a random identity agents carry with their revision cursor)
and the change that last took a credential away.

Revision ID: 0008
Revises: 0007

A database restored from a backup repeats revision numbers an agent may
already have applied from the lost history; with the epoch in the cursor
the controller tells the two apart and answers with a snapshot.

``credentials_seq`` is read by every controller process's periodic re-check:
when it moves, the process forgets the tokens it had verified, so a token
revoked through another process stops working within one re-check even
though verified tokens are otherwise kept for minutes.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_counter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epoch", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("credentials_seq", sa.BigInteger(), server_default="0", nullable=False)
        )
    counter = sa.table("change_counter", sa.column("id", sa.Integer), sa.column("epoch"))
    op.execute(counter.update().where(counter.c.id == 1).values(epoch=secrets.token_hex(8)))


def downgrade() -> None:
    with op.batch_alter_table("change_counter", schema=None) as batch_op:
        batch_op.drop_column("credentials_seq")
        batch_op.drop_column("epoch")
