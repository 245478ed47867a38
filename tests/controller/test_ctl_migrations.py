"""The Alembic migrations build exactly the tables the code queries, on both stores."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from edgectl.controller.store import Store
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
    assert version == "0001"
