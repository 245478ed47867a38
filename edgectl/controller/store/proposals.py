"""Proposals: holds a policy asks an analyst to approve (propose mode, a brake
reached, or an exempt account), approved or rejected singly or in bulk."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from edgectl.controller.errors import Conflict, NotFound
from edgectl.controller.escalation import ladder
from edgectl.controller.store import auto_holds
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store
from edgectl.model import QuarantineMode

pr, s = t.proposals, t.strikes

MAX_BULK = 10_000


def _query() -> sa.Select[Any]:
    return (
        sa.select(pr, t.accounts.c.ref, s.c.evidence, s.c.number)
        .join(t.accounts, t.accounts.c.id == pr.c.account_id)
        .join(s, s.c.id == pr.c.strike_id)
    )


def public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "policy": row.policy,
        "account": row.ref,
        "strike": row.number,
        "mode": row.mode,
        "duration": row.duration,
        "review": row.review,
        "why": row.why,
        "created_at": row.created_at.isoformat(),
        "state": row.state,
        "decided_at": None if row.decided_at is None else row.decided_at.isoformat(),
        "decided_by": row.decided_by,
        "quarantine": row.quarantine_id,
        "evidence": json.loads(row.evidence),
    }


def listing(
    store: Store, state: str = "pending", policy: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = _query()
    if state != "all":
        query = query.where(pr.c.state == state)
    if policy is not None:
        query = query.where(pr.c.policy == policy)
    with store.read() as connection:
        return [public(row) for row in connection.execute(query.order_by(pr.c.id).limit(limit))]


def _decide(change: Change, row: Any, approve: bool, force: bool, reason: str) -> dict[str, Any]:
    if row.state != "pending":
        raise Conflict(f"proposal {row.id} is already {row.state}")
    quarantine = None
    if approve:
        if auto_holds.held(change, row.account_id) is not None:
            raise Conflict(f"proposal {row.id}: account {row.ref!r} is already held")
        exemption = auto_holds.exempted(change, row.account_id)
        if exemption is not None and not force:
            raise Conflict(
                f"proposal {row.id}: account {row.ref!r} has active exemption {exemption}; "
                "approve with force to hold it anyway"
            )
        step = ladder.Step(row.number, QuarantineMode(row.mode), row.duration, row.review)
        expires = ladder.hold_expiry(step, change.at)
        if expires is not None:
            expires = min(expires, change.at + timedelta(seconds=ladder.MAX_DURATION))
        evidence = {**json.loads(row.evidence), "proposal": row.id, "approved_by": change.actor}
        text = f"policy:{row.policy} strike {row.number}, approved: {reason}"
        hold = auto_holds.place(
            change, row.account_id, row.ref, QuarantineMode(row.mode), expires, text, evidence
        )
        quarantine = hold["id"]
    state = "approved" if approve else "rejected"
    change.connection.execute(
        sa.update(pr)
        .where(pr.c.id == row.id)
        .values(
            state=state, decided_at=change.at, decided_by=change.actor, quarantine_id=quarantine
        )
    )
    if not approve:
        # A rejected strike does not count towards the account's next one.
        change.connection.execute(
            sa.update(s).where(s.c.id == row.strike_id).values(outcome="rejected")
        )
    else:
        change.connection.execute(
            sa.update(s).where(s.c.id == row.strike_id).values(quarantine_id=quarantine)
        )
    after = public(change.connection.execute(_query().where(pr.c.id == row.id)).one())
    change.audit(
        f"proposal.{'approve' if approve else 'reject'}",
        "proposal",
        str(row.id),
        public(row),
        after,
        reason,
    )
    return after


def decide(
    store: Store, actor: str, ids: Sequence[int], approve: bool, force: bool, reason: str
) -> list[dict[str, Any]]:
    """Approve or reject proposals ``ids``: all of them, or (on any refusal) none."""
    wanted = list(dict.fromkeys(ids))
    with store.write(actor) as change:
        rows = {
            row.id: row for row in change.connection.execute(_query().where(pr.c.id.in_(wanted)))
        }
        missing = [ident for ident in wanted if ident not in rows]
        if missing:
            raise NotFound(f"no proposal {missing[0]}")
        return [_decide(change, rows[ident], approve, force, reason) for ident in wanted]
