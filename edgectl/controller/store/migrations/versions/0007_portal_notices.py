"""The notice portal: its notice log, and a hold's category and self-release flag.

Revision ID: 0007
Revises: 0006

Holds made before this keep ``self_release`` NULL, which means their mode's
default (MODE_POLICY): allowed for walled-garden, never for smtp or block.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quarantines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("category", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("self_release", sa.Boolean(), nullable=True))
    op.create_table(
        "portal_notices",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("quarantine_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("host", sa.String(length=253), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        sa.Column("code_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("grace_key", sa.Text(), nullable=True),
        sa.Column("grace_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["quarantine_id"], ["quarantines.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("portal_notices", schema=None) as batch_op:
        batch_op.create_index("ix_portal_notices_account", ["account_id", "kind", "at"])
        batch_op.create_index("ix_portal_notices_code", ["quarantine_id", "code_hash"])


def downgrade() -> None:
    with op.batch_alter_table("portal_notices", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_notices_code")
        batch_op.drop_index("ix_portal_notices_account")
    op.drop_table("portal_notices")
    with op.batch_alter_table("quarantines", schema=None) as batch_op:
        batch_op.drop_column("self_release")
        batch_op.drop_column("category")
