"""Offender episodes: the gateways' offender entries kept past their report.

Each status report replaces a gateway's offenders (``store/offenders.py``);
the escalation engine copies them here on every pass, one row per agent
entry (gateway, key, kind, rule, first_seen) with its latest count, and
attributes each new one to whoever held the key at its last event.  Shadow
entries are left out: a rule in shadow mode is being tried, and a
subscriber must not be punished for a limit not yet in force.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.store import attribution
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store, now
from edgectl.controller.store.db import insert_rows, time_param
from edgectl.model import Prefix

e = t.offender_episodes
ACTOR = "system:escalation"


def _current(connection: Connection) -> list[Any]:
    o = t.offenders
    query = (
        sa.select(
            t.gateways.c.name.label("gateway"),
            o.c.key,
            o.c.kind,
            o.c.policy,
            o.c.events,
            o.c.first_seen,
            o.c.last_seen,
        )
        .join(t.gateways, t.gateways.c.id == o.c.gateway_id)
        .where(sa.not_(o.c.shadow))
    )
    return list(connection.execute(query))


def _identity(row: Any) -> tuple[str, str, str, str, datetime]:
    return (row.gateway, row.key, row.kind, row.policy, row.first_seen)


def record(store: Store) -> int:
    """Copy new and grown offender entries; returns how many rows changed.

    Reads first and writes only when something moved: a quiet fleet costs
    the engine one read a pass, not a write transaction.
    """
    with store.read() as connection:
        current = _current(connection)
        known = _known(connection, current)
    changed = [row for row in current if known.get(_identity(row)) != (row.events, row.last_seen)]
    if not changed:
        return 0
    with store.write(ACTOR) as change:
        connection = change.connection
        known = _known(connection, changed)  # again, inside the write: another pass may have run
        new = [row for row in changed if _identity(row) not in known]
        grown = [
            row
            for row in changed
            if _identity(row) in known and known[_identity(row)] != (row.events, row.last_seen)
        ]
        holders = attribution.holders(
            connection, [(Prefix.parse(row.key), row.last_seen) for row in new]
        )
        insert_rows(
            connection,
            e,
            ("gateway", "key", "kind", "policy", "first_seen", "last_seen", "events", "account_id"),
            [
                (
                    row.gateway,
                    row.key,
                    row.kind,
                    row.policy,
                    time_param(connection, row.first_seen),
                    time_param(connection, row.last_seen),
                    row.events,
                    None if holder is None else holder["account_id"],
                )
                for row, holder in zip(new, holders, strict=True)
            ],
        )
        for row in grown:
            connection.execute(
                sa.update(e)
                .where(
                    e.c.gateway == row.gateway,
                    e.c.key == row.key,
                    e.c.kind == row.kind,
                    e.c.policy == row.policy,
                    e.c.first_seen == row.first_seen,
                )
                .values(
                    events=sa.func.max(e.c.events, row.events)
                    if connection.dialect.name == "sqlite"
                    else sa.func.greatest(e.c.events, row.events),
                    last_seen=row.last_seen,
                )
            )
    return len(changed)


def _known(connection: Connection, rows: list[Any]) -> dict[tuple[Any, ...], tuple[int, datetime]]:
    if not rows:
        return {}
    keys = sorted({row.key for row in rows})
    query = sa.select(
        e.c.gateway, e.c.key, e.c.kind, e.c.policy, e.c.first_seen, e.c.events, e.c.last_seen
    ).where(e.c.key.in_(keys))
    return {
        (row.gateway, row.key, row.kind, row.policy, row.first_seen): (row.events, row.last_seen)
        for row in connection.execute(query)
    }


def purge(store: Store, retention_days: int, batch: int = 10_000) -> int:
    """Forget episodes whose last event is older than ``retention_days`` (the session
    history's retention: past it, nothing they cite could be attributed again).
    Strikes keep their own copy of the evidence; marks go with their episode."""
    cutoff = now() - timedelta(days=retention_days)
    with store.read() as connection:
        if (
            connection.execute(sa.select(e.c.id).where(e.c.last_seen < cutoff).limit(1)).first()
            is None
        ):
            return 0
    count = 0
    while True:
        with store.database.write() as connection:
            ids = list(
                connection.execute(
                    sa.select(e.c.id).where(e.c.last_seen < cutoff).limit(batch)
                ).scalars()
            )
            if ids:
                connection.execute(
                    sa.delete(t.policy_marks).where(t.policy_marks.c.episode_id.in_(ids))
                )
                connection.execute(sa.delete(e).where(e.c.id.in_(ids)))
        count += len(ids)
        if len(ids) < batch:
            return count
