"""Housekeeping nobody has to ask for: expire holds, forget old tombstones and revision times."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

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


def _stale_revisions(cutoff: datetime) -> Any:
    """Revision times older than ``cutoff`` that no lag is measured from.

    Kept: each gateway's current revision and its first unapplied one, so
    that a gateway behind for longer than the retention still shows its
    whole lag.
    """
    r, g, s = t.revisions, t.gateways, t.gateway_status
    first = r.alias("first_unapplied")
    current = sa.select(g.c.revision).where(g.c.id == r.c.gateway_id).scalar_subquery()
    earliest = (
        sa.select(sa.func.coalesce(sa.func.min(first.c.seq), -1))
        .select_from(first.outerjoin(s, s.c.gateway_id == first.c.gateway_id))
        .where(
            first.c.gateway_id == r.c.gateway_id,
            first.c.seq > sa.func.coalesce(s.c.applied_revision, -1),
        )
        .scalar_subquery()
    )
    return sa.and_(r.c.at < cutoff, r.c.seq < current, r.c.seq != earliest)


def forget_revisions(store: Store, retention: float) -> int:
    """Forget when old revisions were made (see ``schema.revisions``).

    Housekeeping, not a change: no sequence number, nothing for agents.
    """
    stale = _stale_revisions(now() - timedelta(seconds=retention))
    r = t.revisions
    with store.read() as connection:
        if connection.execute(sa.select(r.c.gateway_id).where(stale).limit(1)).first() is None:
            return 0
    with store.database.write() as connection:
        return int(connection.execute(sa.delete(r).where(stale)).rowcount)
