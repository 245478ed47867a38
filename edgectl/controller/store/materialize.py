"""Before a write commits: recompile what it touched into per-scope entries.

Each entry scope's entries (store.scopes: shared by the gateways whose
entries compile from the same inputs) and each gateway's structure are
stored compiled, stamped with the sequence that last changed them; that is
what makes a delta an index range and a snapshot a single scan.  Only rows
whose compiled form differs are written, so a change that does not concern
a gateway never moves its revision, and one that concerns 1,000 gateways of
one scope writes its entries once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from edgectl.controller.compile import (
    EntryKey,
    Topology,
    compile_entries,
    structure_json,
)
from edgectl.controller.store import loaders, scopes
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.db import insert_rows, time_param


def finish(change: Change) -> None:
    if not (change.structure or change.rebuild or change.addresses):
        return
    _, topology = loaders.view(change)
    made: set[int] = set()
    if change.structure:
        _structures(change)
    if change.structure or change.rebuild:
        made = scopes.regroup(change, topology.garden or frozenset())
        change.connection.execute(
            sa.update(t.counter).where(t.counter.c.id == 1).values(catalog_seq=change.seq)
        )
    scoped = scopes.scoped(change)
    for scope in sorted(made | _scopes_of(change, change.rebuild)):
        _rebuild(change, scoped, scope)
    if change.addresses:
        keys = scoped.keys(change.addresses)
        if keys:
            _refresh(change, scoped, keys)
    _revisions(change)


def _scopes_of(change: Change, gateways: set[int]) -> set[int]:
    if not gateways:
        return set()
    found = change.connection.execute(
        sa.select(t.gateways.c.scope_id).where(t.among(t.gateways.c.id, gateways))
    ).scalars()
    return {int(scope) for scope in found if scope is not None}


def _revisions(change: Change) -> None:
    """Move and date the revisions this change made.

    A scope whose entries changed moves its own revision, however many
    gateways share it: a quarantine at 1,000 gateways of one scope writes
    one row here, not 1,000.  A gateway whose own state changed (its
    structure, its scope) moves its own.  Its gateways are then named in
    ``change.touched`` for the wake-up (one indexed read).
    """
    connection = change.connection
    at = time_param(connection, change.at)
    if change.touched:
        own = sorted(change.touched)
        connection.execute(
            sa.update(t.gateways).where(t.among(t.gateways.c.id, own)).values(revision=change.seq)
        )
        # When this revision was wanted: what a gateway's lag is measured from.
        insert_rows(
            connection, t.revisions, ("gateway_id", "seq", "at"), [(g, change.seq, at) for g in own]
        )
    if change.scopes:
        scopes = sorted(change.scopes)
        connection.execute(
            sa.update(t.entry_scopes)
            .where(t.among(t.entry_scopes.c.id, scopes))
            .values(revision=change.seq)
        )
        insert_rows(
            connection,
            t.scope_revisions,
            ("scope_id", "seq", "at"),
            [(scope, change.seq, at) for scope in scopes],
        )
        woken = connection.execute(
            sa.select(t.gateways.c.id).where(t.among(t.gateways.c.scope_id, scopes))
        ).scalars()
        change.touched.update(int(gateway) for gateway in woken)


def _structures(change: Change) -> None:
    connection = change.connection
    catalogue = loaders.catalogue(connection)
    names = dict(connection.execute(sa.select(t.pools.c.id, t.pools.c.name)).all())
    served: dict[int, list[str]] = {}
    for gateway_id, pool_id in connection.execute(
        sa.select(t.gateway_pools.c.gateway_id, t.gateway_pools.c.pool_id)
    ):
        served.setdefault(gateway_id, []).append(names[pool_id])
    for row in connection.execute(
        sa.select(t.gateways.c.id, t.gateways.c.settings, t.gateways.c.structure)
    ).all():
        text = structure_json(
            loaders.settings_of(row.settings),
            (catalogue.pools[name] for name in served.get(row.id, [])),
            catalogue,
        )
        if text != row.structure:
            connection.execute(
                sa.update(t.gateways)
                .where(t.gateways.c.id == row.id)
                .values(structure=text, structure_seq=change.seq)
            )
            change.touched.add(row.id)


_STORED = sa.select(
    t.entries.c.scope_id, t.entries.c.kind, t.entries.c.key, t.entries.c.payload, t.entries.c.live
)


def _stored(rows: Iterable[Any]) -> dict[EntryKey, tuple[str, bool]]:
    return {(row.scope_id, row.kind, row.key): (row.payload, row.live) for row in rows}


def _write(
    change: Change, desired: dict[EntryKey, str], stored: dict[EntryKey, tuple[str, bool]]
) -> None:
    rows = []
    for slot, payload in desired.items():
        if stored.get(slot) != (payload, True):
            rows.append(_row(change, slot, payload, True))
    for slot, (payload, live) in stored.items():
        if live and slot not in desired:
            # A tombstone: kept so that a delta can say "remove this key".
            rows.append(_row(change, slot, payload, False))
    insert_rows(
        change.connection,
        t.entries,
        _COLUMNS,
        rows,
        conflict=_COLUMNS[:3],
        update=_COLUMNS[3:],
    )
    change.scopes.update(row[0] for row in rows)


_COLUMNS = ("scope_id", "kind", "key", "payload", "seq", "live", "changed_at")


def _row(change: Change, slot: EntryKey, payload: str, live: bool) -> tuple[Any, ...]:
    scope, kind, key = slot
    at = time_param(change.connection, change.at)
    return (scope, kind, key, payload, change.seq, live, at)


def _refresh(change: Change, topology: Topology, keys: set[Any]) -> None:
    holds = loaders.holds_at(change.connection, keys)
    desired = compile_entries(topology, holds, only_keys=keys)
    texts = sorted(str(key) for key in keys)
    stored = _stored(loaders.rows_in(change.connection, _STORED, t.entries.c.key, texts))
    _write(change, desired, stored)


def _rebuild(change: Change, topology: Topology, scope: int) -> None:
    holds = loaders.all_holds(change.connection)
    desired = compile_entries(topology, holds, only_gateway=scope)
    stored = _stored(change.connection.execute(_STORED.where(t.entries.c.scope_id == scope)))
    _write(change, desired, stored)
