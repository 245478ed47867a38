"""Offenders the gateways report: subscriber keys their block log named, per policy.

Each status report that carries an offenders report replaces the gateway's
previous one, in the status report's transaction.  Reading aggregates the
latest reports of every gateway and names the account whose current
session holds each key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.errors import NotFound
from edgectl.controller.store import loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store
from edgectl.controller.store.db import insert_rows, time_param
from edgectl.model import Prefix


@dataclass(frozen=True, slots=True)
class Offender:
    key: Prefix  # an IPv4 /32, or an IPv6 subscriber prefix
    kind: str
    policy: str
    shadow: bool
    count: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class OffenderReport:
    available: bool
    reason: str | None
    window_seconds: int
    entries: tuple[Offender, ...] = ()


@dataclass(frozen=True, slots=True)
class OffenderFilter:
    gateway: str | None = None
    kind: str | None = None
    limit: int = 100
    # Only these subscriber keys (canonical prefix text): an account's addresses.
    keys: tuple[str, ...] | None = None
    newest_first: bool = False  # by last seen (the console's default), not by events


_COLUMNS = ("gateway_id", "key", "kind", "policy", "shadow", "events", "first_seen", "last_seen")


def replace(change: Change, gateway: int, report: OffenderReport) -> None:
    """The gateway's offenders are now exactly ``report``'s."""
    forget(change, gateway)
    connection = change.connection
    connection.execute(
        sa.insert(t.offender_reports).values(
            gateway_id=gateway,
            available=report.available,
            reason=report.reason,
            window_seconds=report.window_seconds,
            entries=len(report.entries),
            reported_at=change.at,
        )
    )
    rows = [
        (
            gateway,
            str(entry.key),
            entry.kind,
            entry.policy,
            entry.shadow,
            entry.count,
            time_param(connection, entry.first_seen),
            time_param(connection, entry.last_seen),
        )
        for entry in report.entries
    ]
    insert_rows(connection, t.offenders, _COLUMNS, rows)


def forget(change: Change, gateway: int) -> None:
    """The gateway has no offenders report (a deleted gateway, or before a new one)."""
    for table in (t.offenders, t.offender_reports):
        change.connection.execute(sa.delete(table).where(table.c.gateway_id == gateway))


def summaries(
    connection: Connection, gateway: int | Collection[int] | None = None
) -> dict[int, dict[str, Any]]:
    """Per gateway id (one, some or all): its last offenders report without the entries."""
    r = t.offender_reports
    query = sa.select(r)
    if isinstance(gateway, int):
        query = query.where(r.c.gateway_id == gateway)
    elif gateway is not None:
        query = query.where(t.among(r.c.gateway_id, gateway))
    return {
        row.gateway_id: {
            "available": row.available,
            "reason": row.reason,
            "window_seconds": row.window_seconds,
            "count": row.entries,
            "reported_at": row.reported_at.isoformat(),
        }
        for row in connection.execute(query)
    }


def _filtered(
    query: sa.Select[Any],
    gateway: int | None,
    kind: str | None,
    keys: tuple[str, ...] | None = None,
) -> sa.Select[Any]:
    o = t.offenders
    if keys is not None:
        query = query.where(o.c.key.in_(keys))
    if gateway is not None:
        query = query.where(o.c.gateway_id == gateway)
    if kind is not None:
        query = query.where(o.c.kind == kind)
    return query


def _gateway_id(connection: Connection, name: str) -> int:
    # Here, not gateways.gateway_id: that module imports this one.  A name
    # nobody has is an error, not an empty list (a typo would look all clear).
    found = connection.execute(
        sa.select(t.gateways.c.id).where(t.gateways.c.name == name)
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no gateway named {name!r}")
    return int(found)


def listing(store: Store, wanted: OffenderFilter) -> list[dict[str, Any]]:
    """Entries aggregated over gateways, most events first.

    Grouped per (key, kind, policy, shadow): counted-only and refused events
    of one policy (a gateway that has not yet applied a shadow switch, or an
    episode that spans the switch) stay apart, as the agents report them.
    """
    o = t.offenders
    group = (o.c.key, o.c.kind, o.c.policy, o.c.shadow)
    total = sa.func.sum(o.c.events).label("total")
    last = sa.func.max(o.c.last_seen).label("last")
    first = sa.func.min(o.c.first_seen).label("first")
    with store.read() as connection:
        gateway = None if wanted.gateway is None else _gateway_id(connection, wanted.gateway)
        groups_query = _filtered(
            sa.select(*group, total, first, last).group_by(*group),
            gateway,
            wanted.kind,
            wanted.keys,
        )
        if wanted.newest_first:
            groups_query = groups_query.order_by(last.desc(), total.desc(), *group)
        else:
            groups_query = groups_query.order_by(total.desc(), last.desc(), *group)
        groups = connection.execute(groups_query.limit(wanted.limit)).all()
        keys = sorted({row.key for row in groups})
        names: dict[tuple[str, str, str, bool], list[str]] = {}
        named = _filtered(
            sa.select(*group, t.gateways.c.name).join(
                t.gateways, t.gateways.c.id == o.c.gateway_id
            ),
            gateway,
            wanted.kind,
            wanted.keys,
        )
        for row in loaders.rows_in(connection, named, o.c.key, keys):
            names.setdefault((row.key, row.kind, row.policy, row.shadow), []).append(row.name)
        owners = holders(connection, [Prefix.parse(key) for key in keys])
    return [
        {
            "key": row.key,
            "kind": row.kind,
            "policy": row.policy,
            "shadow": row.shadow,
            "count": int(row.total),  # PostgreSQL sums a BIGINT as NUMERIC
            "first_seen": row.first.isoformat(),
            "last_seen": row.last.isoformat(),
            "gateways": sorted(names.get((row.key, row.kind, row.policy, row.shadow), [])),
            "account": owners.get(row.key),
        }
        for row in groups
    ]


def holders(connection: Connection, keys: Sequence[Prefix]) -> dict[str, str]:
    """Account by key text, for keys some account's current session holds.

    IPv4: the session address is the key.  IPv6: the session's delegated
    prefix is the key or lies inside it (a key is the pool's subscriber
    prefix, and a session is never shorter than its pool's delegation); if
    several lie inside one key, the lowest address wins.
    """
    s, a = t.sessions, t.accounts
    found: dict[str, str] = {}
    v4 = [key for key in keys if key.version == 4]
    by_v4: sa.Select[Any] = sa.select(s.c.ipv4, a.c.ref).join(a, a.c.id == s.c.account_id)
    for row in loaders.in_keys(connection, by_v4, s.c.ipv4_hex, v4):
        found[str(Prefix.parse(row.ipv4))] = row.ref
    v6 = {key for key in keys if key.version == 6}
    lengths = sorted({key.length for key in v6})
    by_v6: sa.Select[Any] = sa.select(s.c.ipv6, s.c.ipv6_hex, a.c.ref).join(
        a, a.c.id == s.c.account_id
    )
    rows = loaders.in_keys(connection, by_v6, s.c.ipv6_hex, sorted(v6))
    for row in sorted(rows, key=lambda row: str(row.ipv6_hex)):
        session = Prefix.parse(row.ipv6)
        for key in _covering(session, lengths, v6):
            found.setdefault(str(key), row.ref)
    return found


def _covering(session: Prefix, lengths: Iterable[int], keys: set[Prefix]) -> Iterable[Prefix]:
    for length in lengths:
        if length <= session.length and session.supernet(length) in keys:
            yield session.supernet(length)
