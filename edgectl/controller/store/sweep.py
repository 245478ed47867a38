"""Housekeeping nobody has to ask for: expire holds, forget old tombstones, revision times
and session intervals past their retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.store import holds
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store, now
from edgectl.controller.store.db import time_param


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
            sa.select(e.c.scope_id).where(t.tombstone(), e.c.changed_at < cutoff).limit(1)
        ).first()
    if stale is None:
        return 0
    with store.write("system:purge") as change:
        # Grouped here, not by the database: SQLite would group by walking
        # ix_scope_entries_seq (every entry) instead of the tombstone index.
        horizons: dict[int, int] = {}
        for scope, seq in change.connection.execute(
            sa.select(e.c.scope_id, e.c.seq).where(t.tombstone(), e.c.changed_at < cutoff)
        ):
            horizons[scope] = max(seq, horizons.get(scope, seq))
        # The horizon is each gateway's (a move sets it too): one statement
        # per scope and distinct sequence, not per gateway.
        by_seq: dict[int, list[int]] = {}
        for scope, seq in horizons.items():
            by_seq.setdefault(seq, []).append(scope)
        for seq, scopes in by_seq.items():
            change.connection.execute(
                sa.update(t.gateways)
                .where(t.among(t.gateways.c.scope_id, scopes), t.gateways.c.horizon < seq)
                .values(horizon=seq)
            )
        result = change.connection.execute(
            sa.delete(e).where(t.tombstone(), e.c.changed_at < cutoff)
        )
        return int(result.rowcount)


def _first_unapplied(gateway: Any) -> Any:
    """The first revision of ``gateway`` (a column) past the one its agent last
    reported; NULL: none.  A primary-key range read, one row."""
    r, s = t.revisions, t.gateway_status
    applied = (
        sa.select(s.c.applied_revision)
        .where(s.c.gateway_id == gateway)
        .correlate(t.gateways)
        .scalar_subquery()
    )
    return (
        sa.select(r.c.seq)
        .where(r.c.gateway_id == gateway, r.c.seq > sa.func.coalesce(applied, -1))
        .order_by(r.c.seq)
        .limit(1)
        .correlate(t.gateways)
        .scalar_subquery()
    )


def _kept_query() -> Any:
    """By gateway: its id, current revision and first unapplied one (-1: none).

    Their times are kept whatever their age, so that a gateway behind for
    longer than the retention still shows its whole lag.  One statement for
    every gateway (each a primary-key range read): one query per gateway,
    every ``sweep_interval`` in every controller process, was most of the
    database's background load with a fleet of 1,000 gateways.
    """
    g = t.gateways
    first = sa.func.coalesce(_first_unapplied(g.c.id), -1)
    return sa.select(g.c.id, t.wanted_revision(), first.label("first_unapplied"))


def _stale(gateway: Any, current: Any, first: Any, cutoff: datetime) -> Any:
    """One gateway's revision times older than ``cutoff`` that no lag is measured from."""
    r = t.revisions
    return sa.and_(r.c.gateway_id == gateway, r.c.at < cutoff, r.c.seq < current, r.c.seq != first)


def forget_revisions(store: Store, retention: float) -> int:
    """Forget when old revisions were made (see ``schema.revisions``).

    Housekeeping, not a change: no sequence number, nothing for agents.
    Finding none to forget is one statement whatever the number of gateways.
    """
    cutoff = now() - timedelta(seconds=retention)
    kept = _kept_query().subquery()
    # A scalar subquery per gateway, not EXISTS: PostgreSQL turns an EXISTS
    # into a join that walks ix_gateway_revisions_at across every gateway.
    stale = (
        sa.select(t.revisions.c.seq)
        .where(_stale(kept.c.id, kept.c.revision, kept.c.first_unapplied, cutoff))
        .limit(1)
        .scalar_subquery()
    )
    found = sa.select(kept.c.id, stale.label("stale")).subquery()
    with store.read() as connection:
        due = sorted(
            connection.execute(sa.select(found.c.id).where(found.c.stale.is_not(None))).scalars()
        )
    count = _forget_scope_revisions(store, cutoff)
    if not due:
        return count
    with store.database.write() as connection:
        # Read again under the write lock: a report may have moved them.
        rows = connection.execute(_kept_query().where(t.gateways.c.id.in_(due))).all()
        for gateway, current, first in rows:
            stale = _stale(gateway, current, first, cutoff)
            count += int(connection.execute(sa.delete(t.revisions).where(stale)).rowcount)
    return count


def _first_unapplied_in_scope() -> Any:
    """Each gateway's first revision of its scope past both the one its agent
    last reported and its joining the scope; NULL: none."""
    g, s, sr = t.gateways, t.gateway_status, t.scope_revisions
    applied = sa.func.coalesce(
        sa.select(s.c.applied_revision)
        .where(s.c.gateway_id == g.c.id)
        .correlate(g)
        .scalar_subquery(),
        -1,
    )
    bound = sa.case((applied > g.c.scope_seq, applied), else_=g.c.scope_seq)
    return (
        sa.select(sr.c.seq)
        .where(sr.c.scope_id == g.c.scope_id, sr.c.seq > bound)
        .order_by(sr.c.seq)
        .limit(1)
        .correlate(g)
        .scalar_subquery()
    )


def _forget_scope_revisions(store: Store, cutoff: datetime) -> int:
    """Scope revision times older than ``cutoff``, except each scope's current
    one and each of its gateways' first unapplied one (its lag) when earlier
    than its own first unapplied one."""
    sr, es, g = t.scope_revisions, t.entry_scopes, t.gateways
    # Per scope, as for gateways (see forget_revisions): ix_scope_revisions_at.
    stale = (
        sa.select(sr.c.seq)
        .where(sr.c.scope_id == es.c.id, sr.c.at < cutoff, sr.c.seq < es.c.revision)
        .limit(1)
        .correlate(es)
        .scalar_subquery()
    )
    found = sa.select(es.c.id, stale.label("stale")).subquery()
    with store.read() as connection:
        due = sorted(
            connection.execute(sa.select(found.c.id).where(found.c.stale.is_not(None))).scalars()
        )
    if not due:
        return 0
    old = (
        sa.select(sr.c.scope_id, sr.c.seq)
        .join(es, es.c.id == sr.c.scope_id)
        .where(t.among(sr.c.scope_id, due), sr.c.at < cutoff, sr.c.seq < es.c.revision)
    )
    with store.database.write() as connection:
        # Read under the write lock: a report may move a gateway's first unapplied one.
        firsts = sa.select(
            g.c.scope_id, _first_unapplied_in_scope(), _first_unapplied(g.c.id)
        ).where(g.c.scope_id.is_not(None))
        kept = {
            (scope, first)
            for scope, first, own in connection.execute(firsts)
            if first is not None and (own is None or first < own)
        }
        doomed: dict[int, list[int]] = {}
        for scope, seq in connection.execute(old):
            if (scope, seq) not in kept:
                doomed.setdefault(scope, []).append(seq)
        count = 0
        for scope, seqs in doomed.items():
            count += int(
                connection.execute(
                    sa.delete(sr).where(sr.c.scope_id == scope, sr.c.seq.in_(seqs))
                ).rowcount
            )
        return count


PURGE_BATCH = 10_000  # intervals deleted per transaction: a writer waits at most one batch
PURGE_BATCHES = 20  # batches per sweep: a backlog drains over several sweeps


def _close_overtaken(connection: Connection, rows: Sequence[Any]) -> None:
    """Before forgetting rows, end the open rows they had overtaken on their addresses.

    An open row that a later row overtook lost the address when the later
    one started (see ``store.history``); forgetting the later row would
    make the stale open row the latest on the address again.
    """
    mark = "?" if connection.dialect.name == "sqlite" else "%s"
    for version in (4, 6):
        name = f"ipv{version}_hex"
        params = [
            (when, when, when, when, value, when)
            for row in sorted(rows, key=lambda r: r.started)
            if (value := getattr(row, name)) is not None
            for when in [time_param(connection, row.started)]
        ]
        if params:
            connection.exec_driver_sql(
                f"UPDATE session_history SET stopped = {mark}, ended = {mark},"
                f" last_seen = CASE WHEN last_seen > {mark} THEN {mark} ELSE last_seen END"
                f" WHERE {name} = {mark} AND started < {mark} AND ended IS NULL",
                params,
            )


def purge_history(store: Store, retention_days: int) -> int:
    """Delete session intervals that ended more than ``retention_days`` ago, in bounded
    batches (each its own transaction); returns how many.

    Housekeeping, not a change: no sequence number, nothing for agents.
    """
    cutoff = now() - timedelta(days=retention_days)
    h, r = t.session_history, t.nas_restarts
    due = sa.select(h.c.id, h.c.started, h.c.ipv4_hex, h.c.ipv6_hex).where(h.c.ended < cutoff)
    with store.read() as connection:
        idle = connection.execute(due.limit(1)).first() is None
        idle = idle and connection.execute(sa.select(r.c.at).where(r.c.at < cutoff)).first() is None
    if idle:
        return 0
    count = 0
    for _ in range(PURGE_BATCHES):
        with store.database.write() as connection:
            rows = connection.execute(due.order_by(h.c.ended).limit(PURGE_BATCH)).all()
            _close_overtaken(connection, rows)
            ids = [row.id for row in rows]
            mark = "?" if connection.dialect.name == "sqlite" else "%s"
            if ids:
                connection.exec_driver_sql(
                    f"DELETE FROM session_history WHERE id = {mark}", [(i,) for i in ids]
                )
            # A restart older than the retention ended sessions that are gone now too.
            connection.execute(sa.delete(r).where(r.c.at < cutoff))
        count += len(rows)
        if len(rows) < PURGE_BATCH:
            break
    return count
