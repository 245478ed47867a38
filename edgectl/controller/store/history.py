"""Session history: every binding as an interval, and "who held this address at T?".

An interval is a ``session_history`` row: account, IPv4 address and/or IPv6
prefix, ``started`` (inclusive) to ``ended`` (exclusive, NULL while open),
and its source (NAS name or ``api:<actor>``).  Rows never close each other;
an address belongs, at time T, to the row that started on it last at or
before T, if that row has not ended by T.  A row that a later one overtook
on its address has lost that address from the later row's start (a missed
Stop, or the REST feed giving the address to someone else), exactly as the
current binding (``sessions``) is displaced.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from edgectl.controller.compile import hex_of
from edgectl.controller.errors import Invalid
from edgectl.controller.store import loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.db import insert_rows, time_param
from edgectl.model import Prefix

h = t.session_history

# A delegated IPv6 prefix is /32 to /64 (the model's bound for a subscriber
# key): an IPv6 address lies in at most 33 candidate prefixes, each an exact
# index lookup.
V6_LENGTHS = range(32, 65)

HISTORY_LIMIT = 1000  # intervals an account's history shows, newest first


def column(table: Any, version: int) -> Any:
    return table.c.ipv4_hex if version == 4 else table.c.ipv6_hex


def _order(table: Any) -> list[Any]:
    """The latest row first; ties broken by source and session, never by arrival (row id)."""
    return [
        table.c.started.desc(),
        table.c.source.desc(),
        sa.func.coalesce(table.c.session_id, "").desc(),
    ]


def lean(table: Any = h) -> list[Any]:
    """The columns a lookup needs: fewer times to convert per row."""
    names = ("id", "account_id", "source", "session_id", "ipv4", "ipv4_hex", "ipv6", "ipv6_hex")
    return [*(table.c[name] for name in names), table.c.started, table.c.ended]


@functools.cache
def _tops_query(dialect: str, version: int, bounded: bool, ids: bool = False) -> sa.Select[Any]:
    """Built once per shape: building it is most of a lookup's cost in SQLAlchemy.

    ``ids``: only (hex, id, account_id, open) per address, no times to convert
    and no join (what ``current.follow`` needs of a thousand addresses a batch).
    """
    if dialect == "postgresql":
        param = sa.bindparam("edgectl_values", type_=postgresql.ARRAY(sa.String))
        values = sa.func.unnest(param).table_valued("value").render_derived(name="v")
    else:
        values = sa.func.json_each(sa.bindparam("edgectl_values")).table_valued("value").alias("v")
    h2 = h.alias("h2")
    inner = sa.select(h2.c.id).where(column(h2, version) == values.c.value)
    if bounded:
        inner = inner.where(h2.c.started <= sa.bindparam("edgectl_at", type_=t.Instant()))
    top = inner.order_by(*_order(h2)).limit(1).scalar_subquery()
    if ids:
        opened = h.c.ended.is_(None).label("open")
        return sa.select(column(h, version).label("hex"), h.c.id, h.c.account_id, opened).where(
            h.c.id.in_(sa.select(top).select_from(values))
        )
    return (
        sa.select(*lean(), t.accounts.c.ref)
        .join(t.accounts, t.accounts.c.id == h.c.account_id)
        .where(h.c.id.in_(sa.select(top).select_from(values)))
    )


def _tops_rows(
    connection: Connection, version: int, hexes: Iterable[str], at: datetime | None, ids: bool
) -> Iterable[Any]:
    wanted = sorted(set(hexes))
    postgres = connection.dialect.name == "postgresql"
    query = _tops_query(connection.dialect.name, version, at is not None, ids)
    for start in range(0, len(wanted), 50_000):
        chunk = wanted[start : start + 50_000]
        params: dict[str, Any] = {"edgectl_values": chunk if postgres else json.dumps(chunk)}
        if at is not None:
            params["edgectl_at"] = at
        # fetchall: iterating the result fetches (and wraps) one row at a time.
        yield from connection.execute(query, params).all()


def tops(
    connection: Connection, version: int, hexes: Iterable[str], at: datetime | None = None
) -> dict[str, Any]:
    """By address (hex): the row that started on it last (at or before ``at``).

    One statement whatever the count (the addresses travel as one parameter);
    each address is one descending index probe on ``ix_session_history_ipv4/6``
    (hex, started), so it costs the same with 400 days of history behind it.
    """
    key = "ipv4_hex" if version == 4 else "ipv6_hex"
    return {getattr(row, key): row for row in _tops_rows(connection, version, hexes, at, False)}


def top_ids(connection: Connection, version: int, hexes: Iterable[str]) -> dict[str, Any]:
    """``tops`` now, each as (hex, id, account_id, open) only."""
    return {row.hex: row for row in _tops_rows(connection, version, hexes, None, True)}


@functools.cache
def _next_query(version: int) -> sa.Select[Any]:
    return (
        sa.select(h.c.started)
        .where(
            column(h, version) == sa.bindparam("edgectl_value"),
            h.c.started > sa.bindparam("edgectl_after", type_=t.Instant()),
        )
        .order_by(h.c.started)
        .limit(1)
    )


def _next_start(connection: Connection, version: int, value: str, after: datetime) -> Any:
    """When the next row started on this address: where an open-ended row lost it."""
    params = {"edgectl_value": value, "edgectl_after": after}
    return connection.execute(_next_query(version), params).scalar()


def candidates(address: Prefix, path: str) -> list[str]:
    """The addresses (hex) whose holder could hold ``address``."""
    if address.version == 4:
        if not address.is_host:
            raise Invalid(path, f"{address} is not one IPv4 address")
        return [hex_of(address)]
    if address.length < V6_LENGTHS.start:
        raise Invalid(path, f"{address} is shorter than /32: no delegated prefix contains it")
    top = min(address.length, V6_LENGTHS.stop - 1)
    return sorted({hex_of(address.supernet(length)) for length in range(V6_LENGTHS.start, top + 1)})


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def held_until(ended: datetime | None, displaced: datetime | None) -> datetime | None:
    found = [v for v in (ended, displaced) if v is not None]
    return min(found) if found else None


def holder_at(
    connection: Connection, address: Prefix, at: datetime, path: str = "address"
) -> dict[str, Any] | None:
    """Who held ``address`` at ``at`` (start inclusive, end exclusive), or None.

    An IPv6 address (or prefix) matches the delegated prefix containing it;
    if nested delegations both do, the longer one.
    """
    version = address.version
    best: tuple[tuple[int, datetime], Any] | None = None
    for value, row in tops(connection, version, candidates(address, path), at).items():
        text = row.ipv4 if version == 4 else row.ipv6
        held = Prefix.parse(text)
        if not held.contains(address) or (row.ended is not None and row.ended <= at):
            continue
        score = (held.length, row.started)
        if best is None or score > best[0]:
            best = (score, (value, row))
    if best is None:
        return None
    value, row = best[1]
    displaced = _next_start(connection, version, value, row.started)
    if displaced is not None and displaced <= at:
        return None  # cannot happen (the row is the latest at or before ``at``); belt and braces
    return {
        "account": row.ref,
        "address": row.ipv4 if version == 4 else row.ipv6,
        "at": at.isoformat(),
        "started": row.started.isoformat(),
        "ended": _iso(held_until(row.ended, displaced)),
        "source": row.source,
        "session_id": row.session_id,
    }


def open_intervals(connection: Connection, account: int, bound: Iterable[str]) -> dict[str, Any]:
    """The open rows of ``account`` that carry each of ``bound`` (address texts)."""
    wanted = set(bound)
    found: dict[str, Any] = {}
    query = sa.select(h).where(t.open_interval(), h.c.account_id == account).order_by(*_order(h))
    for row in connection.execute(query):
        for text in (row.ipv4, row.ipv6):
            if text in wanted and text not in found:
                found[text] = row
    return found


def account_intervals(connection: Connection, account: int) -> list[dict[str, Any]]:
    """The account's bindings, newest first: one interval per address of each row."""
    later = h.alias("later")
    displaced = {}
    for version in (4, 6):
        col, own = column(later, version), column(h, version)
        displaced[version] = (
            sa.select(sa.func.min(later.c.started))
            .where(col == own, later.c.started > h.c.started)
            .scalar_subquery()
            .label(f"displaced{version}")
        )
    query = (
        sa.select(h, displaced[4], displaced[6])
        .where(h.c.account_id == account)
        .order_by(h.c.started.desc(), h.c.id.desc())
        .limit(HISTORY_LIMIT)
    )
    intervals = []
    for row in connection.execute(query):
        for version, text in ((4, row.ipv4), (6, row.ipv6)):
            if text is None:
                continue
            ended = held_until(row.ended, row.displaced4 if version == 4 else row.displaced6)
            intervals.append(
                {
                    "address": text,
                    "started": row.started.isoformat(),
                    "ended": _iso(ended),
                    "source": row.source,
                    "session_id": row.session_id,
                    "last_seen": row.last_seen.isoformat(),
                }
            )
    return intervals


# Writes from the REST routes ------------------------------------------------------------

COLUMNS = (
    "account_id",
    "source",
    "session_id",
    "ipv4",
    "ipv4_hex",
    "ipv6",
    "ipv6_hex",
    "ipv4_seen",
    "ipv6_seen",
    "started",
    "last_seen",
    "stopped",
    "ended",
)


def api_source(actor: str) -> str:
    return f"api:{actor}"[:200]


def insert(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """New rows, ``COLUMNS`` in order, values as the driver takes them (``db.time_param``)."""
    insert_rows(connection, h, COLUMNS, rows)


def close(change: Change, ids: Sequence[int]) -> None:
    """End open rows now (a REST unbind): stopped and ended at the change's time."""
    if not ids:
        return
    at = time_param(change.connection, change.at)
    mark = "?" if change.connection.dialect.name == "sqlite" else "%s"
    change.connection.exec_driver_sql(
        f"UPDATE session_history SET stopped = {mark}, ended = {mark},"
        f" last_seen = CASE WHEN last_seen > {mark} THEN {mark} ELSE last_seen END"
        f" WHERE id = {mark} AND ended IS NULL",
        [(at, at, at, at, ident) for ident in ids],
    )


Bound = tuple[int, str | None, str | None, str | None, str | None]
"""A REST binding: account id, IPv4 text and hex, IPv6 prefix text and hex."""


def record_bindings(change: Change, bindings: Sequence[Bound]) -> None:
    """REST bindings as intervals of source ``api:<actor>``.

    "The account's addresses are now exactly these": its open rows end now,
    except one that already says exactly this (a repeated PUT keeps its
    interval); a binding with addresses opens a row from now.
    """
    connection = change.connection
    accounts = sorted({binding[0] for binding in bindings})
    open_rows: dict[int, list[Any]] = {}
    query = sa.select(h.c.id, h.c.account_id, h.c.ipv4, h.c.ipv6).where(t.open_interval())
    for row in loaders.rows_in(connection, query, h.c.account_id, accounts):
        open_rows.setdefault(row.account_id, []).append(row)
    at = time_param(connection, change.at)
    source = api_source(change.actor)
    closing: list[int] = []
    rows: list[tuple[Any, ...]] = []
    for account, ipv4, ipv4_hex, ipv6, ipv6_hex in bindings:
        held = open_rows.get(account, ())
        kept = None
        if ipv4 is not None or ipv6 is not None:
            kept = next((r.id for r in held if (r.ipv4, r.ipv6) == (ipv4, ipv6)), None)
        closing.extend(r.id for r in held if r.id != kept)
        if kept is None and (ipv4 is not None or ipv6 is not None):
            v4_seen = None if ipv4 is None else at
            v6_seen = None if ipv6 is None else at
            opened = (v4_seen, v6_seen, at, at, None, None)  # seen, started, last_seen, stop, end
            rows.append((account, source, None, ipv4, ipv4_hex, ipv6, ipv6_hex, *opened))
    close(change, closing)
    insert(connection, rows)
