"""Convergence history (when each gateway revision was made) and reported offenders.

Revision ID: 0002
Revises: 0001

Existing gateways get their history from what the store already knows:
each seq a gateway has not reported applying (its current revision, its
structure change and its entries' sequences) is stamped with the time of
that change from the audit log, else from the entries, else with the time of
this migration (a lag measured from then is an underestimate).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_revisions",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gateway_id", "seq"),
    )
    op.create_table(
        "offender_reports",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gateway_id"),
    )
    op.create_table(
        "offenders",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("policy", sa.String(length=64), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gateway_id", "key", "kind", "policy", "shadow"),
    )
    with op.batch_alter_table("offenders", schema=None) as batch_op:
        batch_op.create_index("ix_offenders_key", ["key", "kind", "policy"], unique=False)
    _seed_revisions()


def _seed_revisions() -> None:
    connection = op.get_bind()
    # Times are copied between columns as the driver returns them (text in
    # SQLite, timestamptz in PostgreSQL), so they keep the stored format.
    if connection.dialect.name == "sqlite":
        migrated: object = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    else:
        migrated = datetime.now(UTC)
    gateways = connection.execute(
        sa.text(
            "SELECT g.id, g.revision, g.structure_seq, s.applied_revision "
            "FROM gateways g LEFT JOIN gateway_status s ON s.gateway_id = g.id"
        )
    ).all()
    if not gateways:
        return
    wanted: dict[tuple[int, int], object] = {}
    for gateway, current, structure, applied in gateways:
        floor = -1 if applied is None else applied
        if current == floor:
            continue  # converged: nothing outstanding to date
        for seq in (current, structure):
            if floor < seq <= current:
                wanted[(gateway, seq)] = None
    entries = connection.execute(
        sa.text(
            "SELECT e.gateway_id, e.seq, MIN(e.changed_at) FROM gateway_entries e "
            "JOIN gateways g ON g.id = e.gateway_id "
            "LEFT JOIN gateway_status s ON s.gateway_id = e.gateway_id "
            "WHERE e.seq > COALESCE(s.applied_revision, -1) AND e.seq <= g.revision "
            "GROUP BY e.gateway_id, e.seq"
        )
    ).all()
    for gateway, seq, at in entries:
        wanted[(gateway, seq)] = at
    # One pass over the audit log (it has no index on seq; this runs once).
    seqs = {seq for _, seq in wanted}
    audited = {
        seq: at
        for seq, at in connection.execute(
            sa.text("SELECT seq, MIN(at) FROM audit_log WHERE seq >= :low GROUP BY seq"),
            {"low": min(seqs, default=0)},
        )
        if seq in seqs
    }
    rows = [
        {"gateway_id": gateway, "seq": seq, "at": audited.get(seq) or at or migrated}
        for (gateway, seq), at in sorted(wanted.items())
    ]
    if rows:
        connection.execute(
            sa.text(
                "INSERT INTO gateway_revisions (gateway_id, seq, at) "
                "VALUES (:gateway_id, :seq, :at)"
            ),
            rows,
        )


def downgrade() -> None:
    with op.batch_alter_table("offenders", schema=None) as batch_op:
        batch_op.drop_index("ix_offenders_key")
    op.drop_table("offenders")
    op.drop_table("offender_reports")
    op.drop_table("gateway_revisions")
