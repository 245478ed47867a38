"""The notice log by hold and kind: a hold's last acknowledgement in one seek.

Revision ID: 0008
Revises: 0007

Every notice looks up whether its hold was acknowledged (then the page is a
reminder).  Through ``ix_portal_notices_code`` (hold, code hash) that read
every row the hold had logged: a device that polls a plain-HTTP URL every
few seconds logs thousands a day, and each of its notices got slower.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("portal_notices", schema=None) as batch_op:
        batch_op.create_index("ix_portal_notices_hold", ["quarantine_id", "kind", "at"])


def downgrade() -> None:
    with op.batch_alter_table("portal_notices", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_notices_hold")
