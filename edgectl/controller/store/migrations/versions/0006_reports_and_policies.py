"""Abuse reports, cases, offender episodes, escalation policies, strikes, proposals.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("class", sa.String(32), nullable=False),
        sa.Column("opened_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("first_at", _TIME, nullable=False),
        sa.Column("last_at", _TIME, nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.UniqueConstraint("account_id", "class", name="uq_cases_account_class"),
    )
    op.create_table(
        "reports",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("received_at", _TIME, nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("message_id", sa.String(250)),
        sa.Column("class", sa.String(32), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id")),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id")),
        sa.Column("attribution", sa.Text()),
        sa.Column("detail", sa.Text()),
        sa.Column("event_key", sa.String(64), nullable=False, unique=True),
        sa.Column("message_key", sa.String(64), unique=True),
    )
    op.create_index("ix_reports_account", "reports", ["account_id", "at"])
    op.create_index("ix_reports_at", "reports", ["at"])
    op.create_index("ix_reports_case", "reports", ["case_id"])
    op.create_table(
        "offender_episodes",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("first_seen", _TIME, nullable=False),
        sa.Column("last_seen", _TIME, nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id")),
        sa.UniqueConstraint(
            "gateway", "key", "kind", "policy", "first_seen", name="uq_offender_episodes_entry"
        ),
    )
    op.create_index("ix_offender_episodes_seen", "offender_episodes", ["last_seen"])
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("report_cursor", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "policy_marks",
        sa.Column(
            "policy_id",
            sa.Integer(),
            sa.ForeignKey("policies.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "episode_id",
            _ID,
            sa.ForeignKey("offender_episodes.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("events", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "strikes",
        sa.Column("id", _ID, primary_key=True),
        sa.Column(
            "policy_id",
            sa.Integer(),
            sa.ForeignKey("policies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer()),
        sa.Column("mode", sa.String(16)),
        sa.Column("pool", sa.String(32)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("quarantine_id", sa.Integer(), sa.ForeignKey("quarantines.id")),
    )
    op.create_index("ix_strikes_account", "strikes", ["policy_id", "account_id", "at"])
    op.create_index("ix_strikes_at", "strikes", ["outcome", "at"])
    op.create_table(
        "proposals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "strike_id",
            _ID,
            sa.ForeignKey("strikes.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("duration", sa.Integer()),
        sa.Column("review", sa.Boolean(), nullable=False),
        sa.Column("why", sa.String(16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_at", _TIME),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("quarantine_id", sa.Integer(), sa.ForeignKey("quarantines.id")),
    )
    op.create_index("ix_proposals_state", "proposals", ["state", "id"])


def downgrade() -> None:
    for table in (
        "proposals",
        "strikes",
        "policy_marks",
        "policies",
        "offender_episodes",
        "reports",
        "cases",
    ):
        op.drop_table(table)
