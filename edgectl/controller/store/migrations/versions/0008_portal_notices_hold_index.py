"""The notice log by hold and kind: a hold's last acknowledgement in one seek;
and notices of holds placed on an address (no account) have no account.

Revision ID: 0008
Revises: 0007

Every notice looks up whether its hold was acknowledged (then the page is a
reminder).  Through ``ix_portal_notices_code`` (hold, code hash) that read
every row the hold had logged: a device that polls a plain-HTTP URL every
few seconds logs thousands a day, and each of its notices got slower.

A hold placed on an address rather than an account (a static line without
sessions) is shown by the portal too; its notices name the hold and the
address, and no account.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("portal_notices", schema=None) as batch_op:
        batch_op.alter_column("account_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_index("ix_portal_notices_hold", ["quarantine_id", "kind", "at"])


def downgrade() -> None:
    # Notices without an account cannot go back into a NOT NULL column.
    op.execute("DELETE FROM portal_notices WHERE account_id IS NULL")
    with op.batch_alter_table("portal_notices", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_notices_hold")
        batch_op.alter_column("account_id", existing_type=sa.Integer(), nullable=False)
