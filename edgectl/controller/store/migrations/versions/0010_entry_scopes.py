"""Entry scopes: gateways whose entries compile from the same inputs share them.

Revision ID: 0010
Revises: 0009

``gateway_entries`` (one row per gateway per key) becomes ``scope_entries``
(one row per scope per key), and each gateway points at its scope (see
``store.scopes``).  A scope has its own revision and revision times
(``scope_revisions``): a gateway's revision is the later of its own and its
scope's, so a change to a scope's entries moves one row, not one per gateway.

Existing gateways are grouped by their signature (the pools they serve,
whether they have a walled garden); each scope takes the
entries of its gateway with the highest revision.  Gateways of a shared
scope whose revision was lower move up to that revision with their horizon
there: the scope's sequence numbers are not the history their agents
followed, so their next poll is answered with a snapshot (its content is
what they had; a gateway at that revision already has it and gets nothing).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from edgectl.controller.store.loaders import settings_of
from edgectl.controller.store.schema import Instant
from edgectl.controller.store.scopes import signature

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _entries_table(owner: str, parent: str) -> None:
    name = f"{owner}_entries" if owner == "scope" else "gateway_entries"
    op.create_table(
        name,
        sa.Column(f"{owner}_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("live", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint([f"{owner}_id"], [f"{parent}.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(f"{owner}_id", "kind", "key"),
    )
    op.create_index(f"ix_{name}_seq", name, [f"{owner}_id", "seq"])
    op.create_index(f"ix_{name}_by_key", name, ["key"])
    op.create_index(
        f"ix_{name}_tombstones",
        name,
        ["changed_at"],
        sqlite_where=sa.text("NOT live"),
        postgresql_where=sa.text("NOT live"),
    )


_COLUMNS = "kind, key, payload, seq, live, changed_at"


def upgrade() -> None:
    op.create_table(
        "entry_scopes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("signature"),
    )
    _entries_table("scope", "entry_scopes")
    op.create_table(
        "scope_revisions",
        sa.Column("scope_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["scope_id"], ["entry_scopes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("scope_id", "seq"),
    )
    op.create_index("ix_scope_revisions_at", "scope_revisions", ["scope_id", "at"])
    # Plain ALTERs, no batch: SQLite's batch mode rebuilds the table, and
    # dropping the old one cascades into every table referencing gateways.
    op.add_column("gateways", sa.Column("scope_id", sa.Integer(), nullable=True))
    op.add_column(
        "gateways", sa.Column("scope_seq", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.create_index("ix_gateways_scope", "gateways", ["scope_id"], unique=False)
    _group()
    op.drop_table("gateway_entries")


def _group() -> None:
    connection = op.get_bind()
    served: dict[int, list[int]] = {}
    for gateway, pool in connection.execute(
        sa.text("SELECT gateway_id, pool_id FROM gateway_pools")
    ):
        served.setdefault(gateway, []).append(pool)
    groups: dict[str, list[tuple[int, int]]] = {}  # signature -> (revision, gateway)
    for row in connection.execute(sa.text("SELECT id, settings, revision FROM gateways")):
        garden = settings_of(row.settings).garden_ready
        wanted = signature(served.get(row.id, ()), garden)
        groups.setdefault(wanted, []).append((int(row.revision), int(row.id)))
    now = datetime.now(UTC)
    revisions = sa.table(
        "gateway_revisions",
        sa.column("gateway_id", sa.Integer),
        sa.column("seq", sa.BigInteger),
        sa.column("at", Instant()),
    )
    for wanted, members in sorted(groups.items()):
        scope = connection.execute(
            sa.text("INSERT INTO entry_scopes (signature) VALUES (:s) RETURNING id"), {"s": wanted}
        ).scalar_one()
        highest, source = max(members)
        connection.execute(
            sa.text(
                f"INSERT INTO scope_entries (scope_id, {_COLUMNS}) "
                f"SELECT :scope, {_COLUMNS} FROM gateway_entries WHERE gateway_id = :source"
            ),
            {"scope": scope, "source": source},
        )
        ids = [gateway for _, gateway in members]
        connection.execute(
            sa.text(
                "UPDATE gateways SET scope_id = :scope, scope_seq = :r WHERE id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"scope": scope, "r": highest, "ids": ids},
        )
        behind = [gateway for revision, gateway in members if revision < highest]
        if len(members) > 1:
            connection.execute(
                sa.text(
                    "UPDATE gateways SET revision = :r, horizon = :r WHERE id IN :ids"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"r": highest, "ids": ids},
            )
        if behind:
            # When the moved revision was wanted: the lag is measured from it.
            connection.execute(
                revisions.insert(),
                [{"gateway_id": gateway, "seq": highest, "at": now} for gateway in behind],
            )


def downgrade() -> None:
    # Each gateway's revision and revision times become its own again.
    scope = "(SELECT s.revision FROM entry_scopes s WHERE s.id = gateways.scope_id)"
    op.execute(f"UPDATE gateways SET revision = {scope} WHERE {scope} > revision")
    op.execute(
        "INSERT INTO gateway_revisions (gateway_id, seq, at) "
        "SELECT g.id, r.seq, r.at FROM scope_revisions r JOIN gateways g "
        "ON g.scope_id = r.scope_id AND r.seq > g.scope_seq WHERE NOT EXISTS "
        "(SELECT 1 FROM gateway_revisions o WHERE o.gateway_id = g.id AND o.seq = r.seq)"
    )
    _entries_table("gateway", "gateways")
    op.execute(
        f"INSERT INTO gateway_entries (gateway_id, {_COLUMNS}) "
        f"SELECT g.id, {', '.join('e.' + c for c in _COLUMNS.split(', '))} "
        "FROM scope_entries e JOIN gateways g ON g.scope_id = e.scope_id"
    )
    op.drop_index("ix_gateways_scope", table_name="gateways")
    op.drop_column("gateways", "scope_id")
    op.drop_column("gateways", "scope_seq")
    op.drop_table("scope_revisions")
    op.drop_table("scope_entries")
    op.drop_table("entry_scopes")
