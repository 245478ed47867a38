"""Reading the audit log.  Writing happens in ``Change.audit``, inside each change's
own transaction; there is deliberately no way to delete from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_id: int | None = None
    limit: int = 100
    # The console shows the newest first and pages back with before_id; the
    # REST route keeps oldest-first with after_id (a stable cursor for feeds).
    newest_first: bool = False
    before_id: int | None = None
    object_ids: tuple[str, ...] | None = None  # any of these (an account's holds)


def _public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "seq": row.seq,
        "at": row.at.isoformat(),
        "actor": row.actor,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "before": None if row.before is None else json.loads(row.before),
        "after": None if row.after is None else json.loads(row.after),
        "reason": row.reason,
    }


def listing(store: Store, wanted: AuditFilter) -> list[dict[str, Any]]:
    a = t.audit
    query = sa.select(a)
    for column, value in (
        (a.c.actor, wanted.actor),
        (a.c.action, wanted.action),
        (a.c.object_type, wanted.object_type),
        (a.c.object_id, wanted.object_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if wanted.object_ids is not None:
        query = query.where(a.c.object_id.in_(wanted.object_ids))
    if wanted.since is not None:
        query = query.where(a.c.at >= wanted.since)
    if wanted.until is not None:
        query = query.where(a.c.at < wanted.until)
    if wanted.after_id is not None:
        query = query.where(a.c.id > wanted.after_id)
    if wanted.before_id is not None:
        query = query.where(a.c.id < wanted.before_id)
    order = a.c.id.desc() if wanted.newest_first else a.c.id
    query = query.order_by(order).limit(wanted.limit)
    with store.read() as connection:
        return [_public(row) for row in connection.execute(query)]


def count(store: Store) -> int:
    with store.read() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(t.audit)).scalar_one())
