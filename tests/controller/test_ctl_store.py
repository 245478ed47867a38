"""Store-level guarantees the API relies on."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgectl.controller.store import Store, audit
from edgectl.controller.store import schema as t
from edgectl.controller.store.catalog import create_pool
from edgectl.model import Pool, PoolKind, Prefix


def test_a_failed_change_leaves_neither_change_nor_audit(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write("tester") as change:
        change.connection.execute(
            sa.insert(t.relays).values(name="mx", prefixes='["198.51.100.25"]')
        )
        change.audit("relay.create", "relay", "mx", None, {"name": "mx"})
        raise RuntimeError("the request failed after writing")
    with store.read() as connection:
        assert connection.execute(sa.select(t.relays)).all() == []
        assert store.current_seq(connection) == 0  # not even a sequence number is spent
    assert audit.count(store) == 0


def test_sequence_numbers_are_consecutive_per_change(store: Store) -> None:
    for index in range(3):
        pool = Pool(f"p{index}", PoolKind.STATIC, (Prefix.parse(f"10.{index}.0.0/16"),))
        create_pool(store, "tester", pool)
    entries = audit.listing(store, audit.AuditFilter())
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert {e["actor"] for e in entries} == {"tester"}


def test_sqlite_follows_nothing_and_notifies_nothing(tmp_path: Path) -> None:
    """One process per SQLite file: no LISTEN thread, no NOTIFY (today's behaviour)."""
    store = Store.open(f"sqlite:///{tmp_path / 'one.db'}")
    seen: list[object] = []
    try:
        store.follow(seen.append, threading.Event())  # returns at once
        with store.database.write() as connection:
            store.database.notify(connection, "x:1")
    finally:
        store.close()
    assert seen == []
