"""The stored evidence of a past period, in time order, for ``escalation.replay``."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from edgectl.controller.escalation import ladder
from edgectl.controller.escalation.replay import Event, simulate
from edgectl.controller.store import loaders, strikes
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store
from edgectl.controller.store.policies import checked
from edgectl.model import Prefix


def _reports(
    connection: Any, policy: ladder.Ladder, since: datetime, until: datetime, pool: Any
) -> Iterator[Event]:
    r = t.reports
    rules = {rule.cls: rule for rule in policy.rules if rule.source == "report"}
    wanted = [cls for cls in rules if policy.matches_report(str(cls))]
    if not wanted:
        return
    query = (
        sa.select(r.c.at, r.c["class"], r.c.address, t.accounts.c.ref)
        .join(t.accounts, t.accounts.c.id == r.c.account_id)
        .where(r.c.at >= since, r.c.at < until, r.c["class"].in_(wanted))
        .order_by(r.c.at, r.c.id)
    )
    for row in connection.execute(query):
        yield Event(row.at, row.ref, rules[row._mapping["class"]], 1, pool(row.address))


def _episodes(
    connection: Any, policy: ladder.Ladder, since: datetime, until: datetime, pool: Any
) -> Iterator[Event]:
    e = t.offender_episodes
    rules = {rule.kind: rule for rule in policy.offender_rules()}
    if not rules:
        return
    query = (
        sa.select(e.c.last_seen, e.c.kind, e.c.key, e.c.events, t.accounts.c.ref)
        .join(t.accounts, t.accounts.c.id == e.c.account_id)
        .where(e.c.last_seen >= since, e.c.last_seen < until, e.c.kind.in_(sorted(rules)))
        .order_by(e.c.last_seen, e.c.id)
    )
    # Streamed: a month of episodes need not sit in memory as rows.
    for row in connection.execution_options(yield_per=10_000).execute(query):
        yield Event(row.last_seen, row.ref, rules[row.kind], int(row.events), pool(row.key))


def replay(
    store: Store, mode: object, spec: object, since: datetime, until: datetime, caps: ladder.Caps
) -> dict[str, Any]:
    """What a ladder (a stored policy's, or one being tuned) would have done
    between ``since`` and ``until``; acts on nothing and writes nothing."""
    _, policy = checked(mode, spec)
    with store.read() as connection:
        _, topology = loaders.view_of(connection)
        pools: dict[str, str | None] = {}

        def pool(address: str) -> str | None:
            if address not in pools:
                placed = topology.placements(Prefix.parse(address))
                pools[address] = placed[0][0].pool.name if placed else None
            return pools[address]

        e = t.exemptions
        exempt = frozenset(
            connection.execute(
                sa.select(t.accounts.c.ref)
                .join(e, e.c.account_id == t.accounts.c.id)
                .where(t.active(e))
            ).scalars()
        )
        merged = heapq.merge(
            _reports(connection, policy, since, until, pool),
            _episodes(connection, policy, since, until, pool),
            key=lambda event: event.at,
        )
        result = simulate(policy, merged, caps, exempt, strikes.OFFENDER_WITHIN)
    return {"since": since.isoformat(), "until": until.isoformat(), **result}
