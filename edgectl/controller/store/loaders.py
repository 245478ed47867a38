"""Rows -> model values: the catalogue, the topology and holds, for compile."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from edgectl.controller.compile import (
    EXEMPTION,
    QUARANTINE,
    Catalogue,
    Hold,
    PlacedPool,
    Topology,
    hex_of,
    hex_range,
)
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.model import (
    GatewaySettings,
    Pool,
    PoolKind,
    Prefix,
    QuarantineMode,
    RateLimitProfile,
    Relay,
)
from edgectl.model.serial import settings_from_data

CHUNK = 2000  # bound parameters a statement: under SQLite's 32766 and PostgreSQL's 65535
RANGES = 200  # BETWEEN pairs a statement; each is an OR term the planner must weigh


def rows_in(
    connection: Connection, query: sa.Select[Any], column: Any, values: Iterable[Any]
) -> Iterator[Any]:
    """Rows of ``query`` with ``column`` equal to one of ``values``.

    The values travel as one parameter (a JSON array that SQLite unpacks
    with json_each, a PostgreSQL array for ANY): the statement compiles
    once whatever the count, and a 5,000-binding batch does not pay
    SQLAlchemy's per-value rendering of an IN list.
    """
    ordered = list(values)
    if not ordered:
        return
    if connection.dialect.name == "postgresql":
        values_type = postgresql.ARRAY(column.type)
        statement = query.where(
            column == sa.any_(sa.bindparam("edgectl_values", type_=values_type))
        )
        yield from connection.execute(statement, {"edgectl_values": ordered}).all()
        return
    unpacked: sa.Select[Any] = sa.select(sa.column("value")).select_from(
        sa.func.json_each(sa.bindparam("edgectl_values"))
    )
    statement = query.where(column.in_(unpacked.scalar_subquery()))
    yield from connection.execute(statement, {"edgectl_values": json.dumps(ordered)}).all()


def pool_of(row: Any) -> Pool:
    return Pool(
        name=row.name,
        kind=PoolKind(row.kind),
        prefixes=tuple(Prefix.parse(p) for p in json.loads(row.prefixes)),
        subscriber_prefix_len=row.subscriber_prefix_len,
        rate_limit=row.rate_limit,
        op25b_shadow=row.op25b_shadow,
    )


def relay_of(row: Any) -> Relay:
    return Relay(name=row.name, prefixes=tuple(Prefix.parse(p) for p in json.loads(row.prefixes)))


def profile_of(row: Any) -> RateLimitProfile:
    return RateLimitProfile(
        name=row.name,
        new_per_minute=row.new_per_minute,
        burst=row.burst,
        concurrent=row.concurrent,
        per_destination=row.per_destination,
        shadow=row.shadow,
    )


def settings_of(text: str) -> GatewaySettings:
    return settings_from_data(json.loads(text))


def catalogue(connection: Connection) -> Catalogue:
    return Catalogue(
        pools={row.name: pool_of(row) for row in connection.execute(sa.select(t.pools))},
        relays=tuple(relay_of(row) for row in connection.execute(sa.select(t.relays))),
        profiles={
            row.name: profile_of(row) for row in connection.execute(sa.select(t.rate_limits))
        },
    )


def served_pools(connection: Connection) -> dict[int, set[int]]:
    """Pool id -> the gateways serving it."""
    served: dict[int, set[int]] = defaultdict(set)
    for gateway_id, pool_id in connection.execute(
        sa.select(t.gateway_pools.c.gateway_id, t.gateway_pools.c.pool_id)
    ):
        served[pool_id].add(gateway_id)
    return served


def view(change: Change) -> tuple[Catalogue, Topology]:
    """Catalogue and topology as this change sees them.

    A change that edits pools, relays, profiles or gateways (``structure``
    or ``rebuild`` set) loads them fresh; any other change reuses the
    store's copy while ``catalog_seq`` has not moved.
    """
    editing = change.structure or bool(change.rebuild)
    if change.view is not None and not editing:
        memo: tuple[Catalogue, Topology] = change.view
        return memo
    cached = None if change.views is None else change.views.entry
    if not editing and cached is not None and cached[0] == change.catalog_seq:
        change.view = cached[1]
    else:
        change.view = _load_view(change.connection)
        if not editing and change.views is not None:
            change.views.entry = (change.catalog_seq, change.view)
    memo = change.view
    return memo


def view_of(connection: Connection) -> tuple[Catalogue, Topology]:
    """Catalogue and topology as ``connection`` sees them, outside any change (reads)."""
    return _load_view(connection)


def _load_view(connection: Connection) -> tuple[Catalogue, Topology]:
    rows = connection.execute(sa.select(t.pools)).all()
    served = served_pools(connection)
    pools = {row.name: pool_of(row) for row in rows}
    catalogue = Catalogue(
        pools=pools,
        relays=tuple(relay_of(r) for r in connection.execute(sa.select(t.relays))),
        profiles={r.name: profile_of(r) for r in connection.execute(sa.select(t.rate_limits))},
    )
    garden = frozenset(
        row.id
        for row in connection.execute(sa.select(t.gateways.c.id, t.gateways.c.settings))
        if settings_of(row.settings).garden_ready
    )
    placed = Topology(
        (PlacedPool(pools[row.name], frozenset(served.get(row.id, ()))) for row in rows),
        relays=(p for relay in catalogue.relays for p in relay.prefixes),
        garden=garden,
    )
    return catalogue, placed


def in_keys(
    connection: Connection, query: sa.Select[Any], column: Any, keys: list[Prefix]
) -> Iterator[Any]:
    """Rows of ``query`` whose ``column`` (an address in hex) lies inside ``keys``.

    IPv4 keys are single addresses (an IN list); IPv6 keys are ranges.  The
    hex widths differ per family, so a stray cross-family match is possible
    in a BETWEEN and is dropped later by compile's ``only_keys``.
    """
    yield from rows_in(connection, query, column, [hex_of(k) for k in keys if k.is_host])
    ranges = [hex_range(k) for k in keys if not k.is_host]
    for start in range(0, len(ranges), RANGES):
        chunk = ranges[start : start + RANGES]
        yield from connection.execute(
            query.where(sa.or_(*(column.between(low, high) for low, high in chunk)))
        )


def _session_holds(rows: Iterable[Any], kind: str) -> Iterator[Hold]:
    for row in rows:
        for text in (row.ipv4, row.ipv6):
            if text is not None:
                yield Hold(
                    kind=kind,
                    address=Prefix.parse(text),
                    account=row.ref,
                    mode=QuarantineMode(row.mode) if kind == QUARANTINE else None,
                    ticket=row.ticket,
                    expires=row.expires_at,
                )


def _account_query(table: sa.Table, kind: str) -> sa.Select[Any]:
    mode = table.c.mode if kind == QUARANTINE else sa.null().label("mode")
    return (
        sa.select(
            t.accounts.c.ref,
            t.sessions.c.ipv4,
            t.sessions.c.ipv6,
            mode,
            table.c.ticket,
            table.c.expires_at,
        )
        .select_from(table)
        .join(t.accounts, t.accounts.c.id == table.c.account_id)
        .join(t.sessions, t.sessions.c.account_id == table.c.account_id)
        .where(table.c.active)
    )


def _prefix_query() -> sa.Select[Any]:
    q = t.quarantines
    return sa.select(q.c.prefix, q.c.mode, q.c.expires_at).where(
        q.c.active, q.c.prefix.is_not(None)
    )


def _prefix_holds(rows: Iterable[Any]) -> Iterator[Hold]:
    for row in rows:
        yield Hold(
            QUARANTINE,
            Prefix.parse(row.prefix),
            None,
            QuarantineMode(row.mode),
            None,
            row.expires_at,
        )


def holds_at(connection: Connection, keys: set[Prefix]) -> list[Hold]:
    """Every active hold whose address lies inside one of ``keys``."""
    ordered = sorted(keys)
    by_family = {
        t.sessions.c.ipv4_hex: [k for k in ordered if k.version == 4],
        t.sessions.c.ipv6_hex: [k for k in ordered if k.version == 6],
    }
    holds: list[Hold] = []
    for table, kind in ((t.quarantines, QUARANTINE), (t.exemptions, EXEMPTION)):
        base = _account_query(table, kind)
        for column, family in by_family.items():
            holds.extend(_session_holds(in_keys(connection, base, column, family), kind))
    rows = in_keys(connection, _prefix_query(), t.quarantines.c.prefix_hex, ordered)
    holds.extend(_prefix_holds(rows))
    return holds


def all_holds(connection: Connection) -> list[Hold]:
    holds: list[Hold] = []
    for table, kind in ((t.quarantines, QUARANTINE), (t.exemptions, EXEMPTION)):
        holds.extend(_session_holds(connection.execute(_account_query(table, kind)), kind))
    holds.extend(_prefix_holds(connection.execute(_prefix_query())))
    return holds
