"""Quarantining many accounts in one transaction (a botnet feed)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.store import loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store
from edgectl.controller.store.holds import (
    QuarantineSpec,
    check_expiry,
    check_grace,
    check_placement,
    hold_values,
    quarantine_public,
    select_hold,
)
from edgectl.controller.store.subscribers import ensure_accounts
from edgectl.model import Prefix


def quarantine_accounts(
    store: Store,
    actor: str,
    accounts: list[str],
    spec: QuarantineSpec,
) -> dict[str, int]:
    """Quarantine many accounts at once (a botnet feed): same rules as one at a time.

    All or nothing: one account on protected space refuses the batch.
    Every account gets its own audit record, in this same transaction.
    """
    q = t.quarantines
    with store.write(actor) as change:
        check_expiry(change, spec.expires)
        connection = change.connection
        ids = ensure_accounts(change, accounts)
        check_grace(change, ids, spec)
        catalogue, topology = loaders.view(change)
        by_account = _sessions_of(connection, sorted(ids.values()))
        addresses = [a for found in by_account.values() for a in found]
        single = QuarantineSpec(spec.mode, spec.reason, account="batch")
        check_placement(change, topology, catalogue, single, addresses)
        active = {
            row.account_id: row
            for row in loaders.rows_in(
                connection, select_hold(q).where(q.c.active), q.c.account_id, sorted(ids.values())
            )
        }
        values = hold_values(spec, actor, change)
        fresh = [ref for ref in dict.fromkeys(accounts) if ids[ref] not in active]
        if fresh:
            connection.execute(
                sa.insert(q),
                [
                    {**values, "account_id": ids[ref], "created_at": change.at, "active": True}
                    for ref in fresh
                ],
            )
        if active:
            connection.execute(
                sa.update(q).where(q.c.id == sa.bindparam("ident")).values(**values),
                [{"ident": row.id} for row in active.values()],
            )
        rows = list(
            loaders.rows_in(
                connection, select_hold(q).where(q.c.active), q.c.account_id, sorted(ids.values())
            )
        )
        records = []
        for row in rows:
            before = active.get(row.account_id)
            records.append(
                {
                    "action": "quarantine.create" if before is None else "quarantine.update",
                    "object_type": "quarantine",
                    "object_id": str(row.id),
                    "before": None if before is None else quarantine_public(before),
                    "after": quarantine_public(row),
                    "reason": spec.reason,
                }
            )
        change.audit_many(records)
        change.addresses.update(addresses)
    return {"created": len(fresh), "updated": len(active)}


def _sessions_of(connection: Connection, accounts: list[int]) -> dict[int, list[Prefix]]:
    query = sa.select(t.sessions.c.account_id, t.sessions.c.ipv4, t.sessions.c.ipv6)
    return {
        row.account_id: [Prefix.parse(text) for text in (row.ipv4, row.ipv6) if text is not None]
        for row in loaders.rows_in(connection, query, t.sessions.c.account_id, accounts)
    }
