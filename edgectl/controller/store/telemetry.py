"""What the controller's Prometheus endpoint shows, read in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from edgectl.controller.store import gateways, offenders
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store, now


@dataclass(frozen=True, slots=True)
class GatewayFacts:
    name: str
    convergence: Mapping[str, Any]  # as ``gateways.convergence`` gives it
    reported_at: datetime | None
    detail: str | None  # the agent's detail as stored (JSON text): untrusted
    offenders: Mapping[str, Any] | None  # its offenders summary (``offenders.summaries``)


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: datetime
    seq: int
    gateways: tuple[GatewayFacts, ...]
    quarantines: Mapping[str, int]  # active ones by mode


def snapshot(store: Store) -> Snapshot:
    """A fixed number of queries whatever the number of gateways."""
    q = t.quarantines
    with store.read() as connection:
        at = now()
        rows = connection.execute(
            sa.select(t.gateways.c.id, t.gateways.c.name, t.wanted_revision()).order_by(
                t.gateways.c.name
            )
        ).all()
        status = gateways.statuses(connection)
        since = gateways.pending_since(connection)
        reported = offenders.summaries(connection)
        seq = store.current_seq(connection)
        held = connection.execute(
            sa.select(q.c.mode, sa.func.count()).where(q.c.active).group_by(q.c.mode)
        ).all()
    facts = []
    for row in rows:
        state = status.get(row.id)
        facts.append(
            GatewayFacts(
                name=row.name,
                convergence=gateways.convergence(row, state, since.get(row.id), at),
                reported_at=None if state is None else state.reported_at,
                detail=None if state is None else state.detail,
                offenders=reported.get(row.id),
            )
        )
    return Snapshot(at, seq, tuple(facts), {mode: int(count) for mode, count in held})
