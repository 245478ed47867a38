"""Before a write commits: recompile what it touched into per-gateway entries.

Each gateway's entries and structure are stored compiled, stamped with the
sequence that last changed them; that is what makes a delta an index range
and a snapshot a single scan.  Only rows whose compiled form differs are
written, so a change that does not concern a gateway never moves its
revision.
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
from edgectl.controller.store import loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.db import insert_rows, time_param


def finish(change: Change) -> None:
    if not (change.structure or change.rebuild or change.addresses):
        return
    _, topology = loaders.view(change)
    if change.structure:
        _structures(change)
    if change.structure or change.rebuild:
        change.connection.execute(
            sa.update(t.counter).where(t.counter.c.id == 1).values(catalog_seq=change.seq)
        )
    for gateway in sorted(change.rebuild):
        _rebuild(change, topology, gateway)
    if change.addresses:
        keys = topology.keys(change.addresses)
        if keys:
            _refresh(change, topology, keys)
    if change.touched:
        touched = sorted(change.touched)
        change.connection.execute(
            sa.update(t.gateways).where(t.gateways.c.id.in_(touched)).values(revision=change.seq)
        )
        # When this revision was wanted: what a gateway's lag is measured from.
        at = time_param(change.connection, change.at)
        insert_rows(
            change.connection,
            t.revisions,
            ("gateway_id", "seq", "at"),
            [(gateway, change.seq, at) for gateway in touched],
        )


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
    t.entries.c.gateway_id, t.entries.c.kind, t.entries.c.key, t.entries.c.payload, t.entries.c.live
)


def _stored(rows: Iterable[Any]) -> dict[EntryKey, tuple[str, bool]]:
    return {(row.gateway_id, row.kind, row.key): (row.payload, row.live) for row in rows}


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
    change.touched.update(row[0] for row in rows)


_COLUMNS = ("gateway_id", "kind", "key", "payload", "seq", "live", "changed_at")


def _row(change: Change, slot: EntryKey, payload: str, live: bool) -> tuple[Any, ...]:
    gateway, kind, key = slot
    at = time_param(change.connection, change.at)
    return (gateway, kind, key, payload, change.seq, live, at)


def _refresh(change: Change, topology: Topology, keys: set[Any]) -> None:
    holds = loaders.holds_at(change.connection, keys)
    desired = compile_entries(topology, holds, only_keys=keys)
    texts = sorted(str(key) for key in keys)
    stored = _stored(loaders.rows_in(change.connection, _STORED, t.entries.c.key, texts))
    _write(change, desired, stored)


def _rebuild(change: Change, topology: Topology, gateway: int) -> None:
    holds = loaders.all_holds(change.connection)
    desired = compile_entries(topology, holds, only_gateway=gateway)
    stored = _stored(change.connection.execute(_STORED.where(t.entries.c.gateway_id == gateway)))
    _write(change, desired, stored)
