"""The Alembic migrations build exactly the tables the code queries, on both stores."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from edgectl.controller.store import Store
from edgectl.controller.store import schema as t
from edgectl.controller.store.db import MIGRATIONS
from edgectl.controller.store.schema import metadata


def test_migrations_match_schema(store: Store) -> None:
    with store.database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []


def test_migrate_is_idempotent_and_starts_the_sequence_at_zero(store: Store) -> None:
    store.database.migrate()
    store.database.migrate()
    with store.read() as connection:
        assert store.current_seq(connection) == 0
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0010"


def _alembic(store: Store, action: Callable[[Config, str], None], target: str) -> None:
    with store.database.engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.attributes["connection"] = connection
        action(config, target)


# The per-gateway entries as migrations before 0010 left them.
_GATEWAY_ENTRIES = sa.table(
    "gateway_entries",
    *(sa.column(name) for name in ("gateway_id", "kind", "key", "payload", "seq", "live")),
    sa.column("changed_at", t.Instant()),
)


def test_0002_dates_the_revisions_gateways_have_not_applied(store: Store) -> None:
    """Existing gateways get their history from the audit log and the entries."""
    _alembic(store, command.downgrade, "0001")
    at = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute) for minute in range(6)]
    with store.database.engine.begin() as connection:
        for name, revision, structure in (("behind", 5, 3), ("never", 5, 2), ("caught_up", 5, 1)):
            connection.execute(
                sa.insert(t.gateways).values(
                    name=name,
                    settings="{}",
                    token_hash=name,
                    revision=revision,
                    structure="",
                    structure_seq=structure,
                    horizon=0,
                )
            )
        ids = dict(connection.execute(sa.select(t.gateways.c.name, t.gateways.c.id)).all())
        for seq in (2, 3, 5):
            connection.execute(
                sa.insert(t.audit).values(
                    seq=seq, at=at[seq], actor="a", action="x", object_type="y", object_id="z"
                )
            )
        for name, applied in (("behind", 3), ("caught_up", 5)):
            connection.execute(
                sa.insert(t.gateway_status).values(
                    gateway_id=ids[name], applied_revision=applied, reported_at=at[5], detail="{}"
                )
            )
        for name in ("behind", "caught_up"):
            connection.execute(
                sa.insert(_GATEWAY_ENTRIES).values(
                    gateway_id=ids[name],
                    kind="q",
                    key="100.64.0.1",
                    payload="{}",
                    seq=4,  # a change the audit log has no record of
                    live=True,
                    changed_at=at[4],
                )
            )
    _alembic(store, command.upgrade, "head")
    with store.read() as connection:
        rows = connection.execute(
            sa.select(t.revisions.c.gateway_id, t.revisions.c.seq, t.revisions.c.at)
        ).all()
    assert sorted((gateway, seq, when) for gateway, seq, when in rows) == sorted(
        [
            (ids["behind"], 4, at[4]),  # from its entry
            (ids["behind"], 5, at[5]),  # from the audit log
            (ids["never"], 2, at[2]),  # its structure change
            (ids["never"], 5, at[5]),
        ]
    )


def test_0004_turns_existing_bindings_into_open_intervals(store: Store) -> None:
    """Who held what when the history began stays attributable from then on."""
    _alembic(store, command.downgrade, "0003")
    since = datetime(2026, 1, 1, tzinfo=UTC)
    with store.database.engine.begin() as connection:
        for ref, ipv4, ipv6 in (("a", "100.64.0.1", None), ("b", None, None)):
            account = connection.execute(
                sa.insert(t.accounts).values(ref=ref, created_at=since).returning(t.accounts.c.id)
            ).scalar_one()
            connection.execute(
                sa.insert(t.sessions).values(
                    account_id=account,
                    ipv4=ipv4,
                    ipv4_hex=None if ipv4 is None else "40400001",
                    ipv6=ipv6,
                    updated_at=since,
                )
            )
    _alembic(store, command.upgrade, "head")
    h = t.session_history
    with store.read() as connection:
        rows = connection.execute(sa.select(h)).all()
    assert [(r.source, r.ipv4, r.ipv4_hex, r.started, r.ended) for r in rows] == [
        ("api:migration-0004", "100.64.0.1", "40400001", since, None)
    ]
    assert rows[0].ipv4_seen == since and rows[0].ipv6_seen is None


def test_0006_downgrades_and_upgrades_again(store: Store) -> None:
    """Reports and policies come and go without touching the tables before them."""
    _alembic(store, command.downgrade, "0005")
    with store.database.engine.connect() as connection:
        names = set(sa.inspect(connection).get_table_names())
    assert not names & {"reports", "cases", "policies", "strikes", "proposals"}
    assert {"session_history", "quarantines"} <= names
    _alembic(store, command.upgrade, "head")
    with store.database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
