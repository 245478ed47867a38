"""Session history: every binding as an interval, and the NAS restarts the feed has seen.

Revision ID: 0004
Revises: 0003

Bindings that exist when this runs become open intervals from their
``updated_at`` with source ``api:migration-0004``: what was bound then is
still attributable, from the last time anyone said so.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=253), nullable=True),
        sa.Column("ipv4", sa.String(length=15), nullable=True),
        sa.Column("ipv4_hex", sa.String(length=8), nullable=True),
        sa.Column("ipv6", sa.String(length=64), nullable=True),
        sa.Column("ipv6_hex", sa.String(length=32), nullable=True),
        sa.Column("ipv4_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ipv6_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "session_id", "source", "account_id", name="uq_session_history_session"
        ),
    )
    with op.batch_alter_table("session_history", schema=None) as batch_op:
        batch_op.create_index("ix_session_history_ipv4", ["ipv4_hex", "started"])
        batch_op.create_index("ix_session_history_ipv6", ["ipv6_hex", "started"])
        batch_op.create_index("ix_session_history_account", ["account_id", "ended", "started"])
        batch_op.create_index("ix_session_history_source", ["source", "ended", "started"])
        batch_op.create_index("ix_session_history_ended", ["ended", "last_seen"])
    op.create_table(
        "nas_restarts",
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "at"),
    )
    op.execute(
        "INSERT INTO session_history (account_id, source, session_id, ipv4, ipv4_hex, ipv6,"
        " ipv6_hex, ipv4_seen, ipv6_seen, started, last_seen)"
        " SELECT account_id, 'api:migration-0004', NULL, ipv4, ipv4_hex, ipv6, ipv6_hex,"
        " CASE WHEN ipv4 IS NULL THEN NULL ELSE updated_at END,"
        " CASE WHEN ipv6 IS NULL THEN NULL ELSE updated_at END, updated_at, updated_at"
        " FROM sessions WHERE ipv4 IS NOT NULL OR ipv6 IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("nas_restarts")
    with op.batch_alter_table("session_history", schema=None) as batch_op:
        for name in (
            "ix_session_history_ended",
            "ix_session_history_source",
            "ix_session_history_account",
            "ix_session_history_ipv6",
            "ix_session_history_ipv4",
        ):
            batch_op.drop_index(name)
    op.drop_table("session_history")
