"""Initial schema: catalogue, subscribers, holds, compiled entries, tokens, audit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ref"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=200), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_actor", ["actor"], unique=False)
        batch_op.create_index("ix_audit_object", ["object_type", "object_id"], unique=False)

    op.create_table(
        "change_counter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("catalog_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "gateways",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("structure", sa.Text(), nullable=False),
        sa.Column("structure_seq", sa.BigInteger(), nullable=False),
        sa.Column("horizon", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "pools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("prefixes", sa.Text(), nullable=False),
        sa.Column("subscriber_prefix_len", sa.Integer(), nullable=True),
        sa.Column("rate_limit", sa.String(length=32), nullable=True),
        sa.Column("op25b_shadow", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "rate_limits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("new_per_minute", sa.Integer(), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        sa.Column("concurrent", sa.Integer(), nullable=True),
        sa.Column("per_destination", sa.Integer(), nullable=True),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "relays",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("prefixes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hash"),
    )
    op.create_table(
        "exemptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("ticket", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=200), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("exemptions", schema=None) as batch_op:
        batch_op.create_index("ix_exemption_expiry", ["expires_at"], unique=False)
        batch_op.create_index("ix_exemption_account", ["account_id"], unique=False)
        batch_op.create_index(
            "uq_exemption_active_account",
            ["account_id"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    op.create_table(
        "gateway_entries",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("live", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gateway_id", "kind", "key"),
    )
    with op.batch_alter_table("gateway_entries", schema=None) as batch_op:
        batch_op.create_index("ix_gateway_entries_key", ["kind", "key"], unique=False)
        batch_op.create_index("ix_gateway_entries_seq", ["gateway_id", "seq"], unique=False)

    op.create_table(
        "gateway_pools",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["pools.id"],
        ),
        sa.PrimaryKeyConstraint("gateway_id", "pool_id"),
    )
    op.create_table(
        "gateway_status",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("applied_revision", sa.BigInteger(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gateway_id"),
    )
    op.create_table(
        "quarantines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("prefix", sa.String(length=64), nullable=True),
        sa.Column("prefix_hex", sa.String(length=32), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ticket", sa.String(length=200), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=200), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("(account_id IS NULL) <> (prefix IS NULL)", name="ck_quarantine_target"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("quarantines", schema=None) as batch_op:
        batch_op.create_index("ix_quarantine_expiry", ["expires_at"], unique=False)
        batch_op.create_index("ix_quarantine_account", ["account_id"], unique=False)
        batch_op.create_index("ix_quarantine_prefix_hex", ["prefix_hex"], unique=False)
        batch_op.create_index("ix_quarantine_ticket", ["ticket"], unique=False)
        batch_op.create_index(
            "uq_quarantine_active_account",
            ["account_id"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )
        batch_op.create_index(
            "uq_quarantine_active_prefix",
            ["prefix"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    op.create_table(
        "sessions",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("ipv4", sa.String(length=15), nullable=True),
        sa.Column("ipv4_hex", sa.String(length=8), nullable=True),
        sa.Column("ipv6", sa.String(length=64), nullable=True),
        sa.Column("ipv6_hex", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("ipv4_hex"),
        sa.UniqueConstraint("ipv6_hex"),
    )
    # The change sequence starts at 0; revision 0 means "nothing yet".
    counter = sa.table(
        "change_counter", sa.column("id", sa.Integer), sa.column("seq", sa.BigInteger)
    )
    op.bulk_insert(counter, [{"id": 1, "seq": 0}])


def downgrade() -> None:

    op.drop_table("sessions")
    with op.batch_alter_table("quarantines", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_quarantine_active_prefix",
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )
        batch_op.drop_index(
            "uq_quarantine_active_account",
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )
        batch_op.drop_index("ix_quarantine_ticket")
        batch_op.drop_index("ix_quarantine_prefix_hex")
        batch_op.drop_index("ix_quarantine_expiry")
        batch_op.drop_index("ix_quarantine_account")

    op.drop_table("quarantines")
    op.drop_table("gateway_status")
    op.drop_table("gateway_pools")
    with op.batch_alter_table("gateway_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_gateway_entries_seq")
        batch_op.drop_index("ix_gateway_entries_key")

    op.drop_table("gateway_entries")
    with op.batch_alter_table("exemptions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_exemption_active_account",
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )
        batch_op.drop_index("ix_exemption_expiry")
        batch_op.drop_index("ix_exemption_account")

    op.drop_table("exemptions")
    op.drop_table("tokens")
    op.drop_table("relays")
    op.drop_table("rate_limits")
    op.drop_table("pools")
    op.drop_table("gateways")
    op.drop_table("change_counter")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_object")
        batch_op.drop_index("ix_audit_actor")

    op.drop_table("audit_log")
    op.drop_table("accounts")
