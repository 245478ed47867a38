"""Web console sessions: a hashed cookie id per sign-in, tied to its API token;
covering indexes for the console's quarantine counts.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_console_sessions_token", ["token_hash"])
        batch_op.create_index("ix_console_sessions_created", ["created_at"])
    with op.batch_alter_table("quarantines", schema=None) as batch_op:
        batch_op.create_index("ix_quarantine_facets", ["mode", "actor", "active", "ended_by"])
        batch_op.create_index(
            "ix_quarantine_ticket_facets", ["ticket", "active", "mode", "actor", "ended_by"]
        )


def downgrade() -> None:
    with op.batch_alter_table("quarantines", schema=None) as batch_op:
        batch_op.drop_index("ix_quarantine_ticket_facets")
        batch_op.drop_index("ix_quarantine_facets")
    op.drop_table("console_sessions")
