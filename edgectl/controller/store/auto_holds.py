"""A hold that a policy (or an analyst approving its proposal) puts on an account,
inside a change that is already open: the strike, its hold and their audit
records commit together or not at all."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from edgectl.controller.store import loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.holds import (
    QuarantineSpec,
    check_placement,
    hold_values,
    quarantine_public,
    select_hold,
)
from edgectl.controller.store.subscribers import session_addresses
from edgectl.model import QuarantineMode

q = t.quarantines


def held(change: Change, account: int) -> int | None:
    """The account's active quarantine, if any (whoever made it)."""
    found = change.connection.execute(
        sa.select(q.c.id).where(q.c.account_id == account, t.active(q))
    ).scalar()
    return None if found is None else int(found)


def exempted(change: Change, account: int) -> int | None:
    e = t.exemptions
    found = change.connection.execute(
        sa.select(e.c.id).where(e.c.account_id == account, t.active(e))
    ).scalar()
    return None if found is None else int(found)


def place(
    change: Change,
    account: int,
    ref: str,
    mode: QuarantineMode,
    expires: datetime | None,
    reason: str,
    evidence: dict[str, Any],
) -> dict[str, Any]:
    """Hold ``account``; the caller has checked it holds nothing now.

    Raises ``Invalid`` where an analyst's quarantine would be refused (a
    walled garden on a gateway with no portal, protected space): the same
    guard rails for automatic holds.
    """
    connection = change.connection
    spec = QuarantineSpec(mode, reason, account=ref, expires=expires)
    catalogue, topology = loaders.view(change)
    addresses = session_addresses(connection, account)
    check_placement(change, topology, catalogue, spec, addresses)
    ident = connection.execute(
        sa.insert(q)
        .values(
            account_id=account,
            created_at=change.at,
            active=True,
            **hold_values(spec, change.actor, change),
        )
        .returning(q.c.id)
    ).scalar_one()
    after = quarantine_public(connection.execute(select_hold(q).where(q.c.id == ident)).one())
    change.addresses.update(addresses)
    change.audit(
        "quarantine.create", "quarantine", str(ident), None, {**after, "evidence": evidence}, reason
    )
    return after
