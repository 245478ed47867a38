"""Indexes the write path and the sweeper need to cost the same at 1k and 200k holds.

Revision ID: 0003
Revises: 0002

- ``gateway_entries`` is read by key alone when a change recompiles a few
  subscriber keys; the old index led with ``kind``, so that read scanned
  every entry of every gateway.
- "is there any bare-prefix hold?" (every session upsert asks) gets an
  index of just those holds.
- the sweeper's tombstone and expiry checks get partial indexes, and its
  revision-time check an index by time, so that they walk only what they
  may act on, not the whole history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_gateway_entries_key", table_name="gateway_entries")
    op.create_index("ix_gateway_entries_by_key", "gateway_entries", ["key"])
    op.create_index(
        "ix_gateway_entries_tombstones",
        "gateway_entries",
        ["changed_at"],
        sqlite_where=sa.text("NOT live"),
        postgresql_where=sa.text("NOT live"),
    )
    op.create_index(
        "ix_quarantine_prefix_holds",
        "quarantines",
        ["id"],
        sqlite_where=sa.text("active AND prefix IS NOT NULL"),
        postgresql_where=sa.text("active AND prefix IS NOT NULL"),
    )
    op.create_index("ix_gateway_revisions_at", "gateway_revisions", ["gateway_id", "at"])
    for table, short in (("quarantines", "quarantine"), ("exemptions", "exemption")):
        op.drop_index(f"ix_{short}_expiry", table_name=table)
        op.create_index(
            f"ix_{short}_due",
            table,
            ["expires_at"],
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )


def downgrade() -> None:
    for table, short in (("quarantines", "quarantine"), ("exemptions", "exemption")):
        op.drop_index(f"ix_{short}_due", table_name=table)
        op.create_index(f"ix_{short}_expiry", table, ["expires_at"])
    op.drop_index("ix_gateway_revisions_at", table_name="gateway_revisions")
    op.drop_index("ix_quarantine_prefix_holds", table_name="quarantines")
    op.drop_index("ix_gateway_entries_tombstones", table_name="gateway_entries")
    op.drop_index("ix_gateway_entries_by_key", table_name="gateway_entries")
    op.create_index("ix_gateway_entries_key", "gateway_entries", ["kind", "key"])
