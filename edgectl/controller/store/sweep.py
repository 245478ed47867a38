"""Housekeeping nobody has to ask for: expire holds, forget old tombstones and revision times."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.store import holds
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store, now


def expire(store: Store) -> int:
    """End every hold whose expiry has passed; returns how many."""
    at = now()
    due = []
    with store.read() as connection:
        for table in (t.quarantines, t.exemptions):
            query = sa.select(table.c.id).where(t.active(table), table.c.expires_at <= at).limit(1)
            due.append(connection.execute(query).first() is not None)
    if not any(due):
        return 0  # the common case takes no write lock and no sequence number
    count = 0
    with store.write(holds.EXPIRY_ACTOR) as change:
        for table, what in ((t.quarantines, "quarantine"), (t.exemptions, "exemption")):
            rows = change.connection.execute(
                holds.select_hold(table).where(t.active(table), table.c.expires_at <= change.at)
            ).all()
            for row in rows:
                holds.end_hold(change, table, row, "expired", what)
                count += 1
    return count


def purge_tombstones(store: Store, retention: float) -> int:
    """Forget removals older than ``retention`` seconds; older cursors get snapshots."""
    cutoff = now() - timedelta(seconds=retention)
    e = t.entries
    with store.read() as connection:
        stale = connection.execute(
            sa.select(e.c.gateway_id).where(t.tombstone(), e.c.changed_at < cutoff).limit(1)
        ).first()
    if stale is None:
        return 0
    with store.write("system:purge") as change:
        # Grouped here, not by the database: SQLite would group by walking
        # ix_gateway_entries_seq (every entry) instead of the tombstone index.
        horizons: dict[int, int] = {}
        for gateway, seq in change.connection.execute(
            sa.select(e.c.gateway_id, e.c.seq).where(t.tombstone(), e.c.changed_at < cutoff)
        ):
            horizons[gateway] = max(seq, horizons.get(gateway, seq))
        for gateway, seq in horizons.items():
            change.connection.execute(
                sa.update(t.gateways)
                .where(t.gateways.c.id == gateway, t.gateways.c.horizon < seq)
                .values(horizon=seq)
            )
        result = change.connection.execute(
            sa.delete(e).where(t.tombstone(), e.c.changed_at < cutoff)
        )
        return int(result.rowcount)


def _kept(connection: Connection) -> dict[int, tuple[int, int]]:
    """By gateway: its current revision and its first unapplied one (-1: none).

    Their times are kept whatever their age, so that a gateway behind for
    longer than the retention still shows its whole lag.  One query per
    gateway, each a primary-key range: gateways are few, their revision
    times may be a week of changes.
    """
    r, s = t.revisions, t.gateway_status
    applied = dict(connection.execute(sa.select(s.c.gateway_id, s.c.applied_revision)).all())
    kept = {}
    for gateway, current in connection.execute(sa.select(t.gateways.c.id, t.gateways.c.revision)):
        first = connection.execute(
            sa.select(sa.func.min(r.c.seq)).where(
                r.c.gateway_id == gateway, r.c.seq > applied.get(gateway, -1)
            )
        ).scalar()
        kept[gateway] = (current, -1 if first is None else first)
    return kept


def _stale(gateway: int, current: int, first: int, cutoff: datetime) -> Any:
    """One gateway's revision times older than ``cutoff`` that no lag is measured from."""
    r = t.revisions
    return sa.and_(r.c.gateway_id == gateway, r.c.at < cutoff, r.c.seq < current, r.c.seq != first)


def forget_revisions(store: Store, retention: float) -> int:
    """Forget when old revisions were made (see ``schema.revisions``).

    Housekeeping, not a change: no sequence number, nothing for agents.
    """
    cutoff = now() - timedelta(seconds=retention)
    r = t.revisions
    with store.read() as connection:
        due = [
            (gateway, current, first)
            for gateway, (current, first) in _kept(connection).items()
            if connection.execute(
                sa.select(r.c.seq).where(_stale(gateway, current, first, cutoff)).limit(1)
            ).first()
            is not None
        ]
    if not due:
        return 0
    count = 0
    with store.database.write() as connection:
        # Read again under the write lock: a report may have moved them.
        kept = _kept(connection)
        for gateway, _, _ in due:
            if gateway in kept:
                current, first = kept[gateway]
                stale = _stale(gateway, current, first, cutoff)
                count += int(connection.execute(sa.delete(r).where(stale)).rowcount)
    return count
