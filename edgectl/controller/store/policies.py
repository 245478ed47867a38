"""Escalation policies: a named ladder and a mode, kept as the JSON it was given."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.errors import Invalid, NotFound
from edgectl.controller.escalation import ladder
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store

p = t.policies


@dataclass(frozen=True, slots=True)
class Policy:
    id: int
    name: str
    mode: ladder.Mode
    ladder: ladder.Ladder
    report_cursor: int

    @property
    def actor(self) -> str:
        return f"policy:{self.name}"


def checked(mode: object, spec: object) -> tuple[ladder.Mode, ladder.Ladder]:
    """The mode and ladder of a request, or ``Invalid`` naming the field."""
    if mode not in ladder.MODES:
        raise Invalid("mode", f"expected one of {', '.join(ladder.MODES)}")
    try:
        parsed = ladder.parse(spec)
    except ladder.SpecError as error:
        raise Invalid(error.path, error.reason) from None
    return mode, parsed


def public(row: Any) -> dict[str, Any]:
    spec = json.loads(row.spec)
    return {
        "name": row.name,
        "mode": row.mode,
        **spec,
        "actor": row.actor,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def of_row(row: Any) -> Policy:
    return Policy(row.id, row.name, row.mode, ladder.parse(json.loads(row.spec)), row.report_cursor)


def put(
    store: Store, actor: str, name: str, mode: object, spec: object
) -> tuple[dict[str, Any], bool]:
    """Create or replace the policy ``name``.  Returns (policy, created).

    A new policy starts at the newest report: it acts on what arrives from
    now on, not on the backlog (that is what replay is for).
    """
    checked_mode, parsed = checked(mode, spec)
    stored = json.dumps(ladder.dump(parsed), sort_keys=True)
    with store.write(actor) as change:
        connection = change.connection
        existing = connection.execute(sa.select(p).where(p.c.name == name)).first()
        if existing is None:
            newest = connection.execute(sa.select(sa.func.max(t.reports.c.id))).scalar() or 0
            connection.execute(
                sa.insert(p).values(
                    name=name,
                    mode=checked_mode,
                    spec=stored,
                    actor=actor,
                    created_at=change.at,
                    updated_at=change.at,
                    report_cursor=newest,
                )
            )
            _baseline(change, name)
        else:
            connection.execute(
                sa.update(p)
                .where(p.c.id == existing.id)
                .values(mode=checked_mode, spec=stored, actor=actor, updated_at=change.at)
            )
        after = public(connection.execute(sa.select(p).where(p.c.name == name)).one())
        before = None if existing is None else public(existing)
        action = "policy.create" if existing is None else "policy.update"
        change.audit(action, "policy", name, before, after)
    return after, existing is None


def _baseline(change: Change, name: str) -> None:
    """Offender events seen before the policy existed are counted as done, as the
    report cursor skips earlier reports: a new policy punishes no backlog."""
    e, m = t.offender_episodes, t.policy_marks
    ident = change.connection.execute(sa.select(p.c.id).where(p.c.name == name)).scalar_one()
    since = change.at - timedelta(seconds=86_400)  # no agent entry outlives a day (WINDOW_MAX)
    change.connection.execute(
        sa.insert(m).from_select(
            ["policy_id", "episode_id", "events"],
            sa.select(sa.literal(ident), e.c.id, e.c.events).where(e.c.last_seen >= since),
        )
    )


def get(store: Store, name: str) -> dict[str, Any]:
    with store.read() as connection:
        row = connection.execute(sa.select(p).where(p.c.name == name)).first()
    if row is None:
        raise NotFound(f"no policy {name!r}")
    return public(row)


def listing(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        return [public(row) for row in connection.execute(sa.select(p).order_by(p.c.name))]


def delete(store: Store, actor: str, name: str) -> None:
    """Remove a policy; its strikes go with it, the holds it made stay (lift them)."""
    with store.write(actor) as change:
        row = change.connection.execute(sa.select(p).where(p.c.name == name)).first()
        if row is None:
            raise NotFound(f"no policy {name!r}")
        change.connection.execute(
            sa.delete(t.proposals).where(
                t.proposals.c.policy == name, t.proposals.c.state == "pending"
            )
        )
        change.connection.execute(sa.delete(p).where(p.c.id == row.id))
        change.audit("policy.delete", "policy", name, public(row), None)


def active(connection: Connection) -> list[Policy]:
    return [of_row(row) for row in connection.execute(sa.select(p).order_by(p.c.id))]


def load(store: Store, actor: str, data: object) -> list[str]:
    """Policies from a file's data (``{"policy": [{"name", "mode", ...}, ...]}``),
    each created or replaced; checked whole before any is written."""
    if not isinstance(data, dict) or not isinstance(data.get("policy"), list):
        raise Invalid("policy", "expected a list of policies ([[policy]] tables)")
    wanted = []
    for index, item in enumerate(data["policy"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise Invalid(f"policy[{index}].name", "expected a name")
        spec = {k: v for k, v in item.items() if k not in ("name", "mode")}
        try:
            checked(item.get("mode"), spec)
        except Invalid as error:
            raise Invalid(f"policy[{index}].{error.path}", error.reason) from None
        wanted.append((item["name"], item.get("mode"), spec))
    for name, mode, spec in wanted:
        put(store, actor, name, mode, spec)
    return [name for name, _, _ in wanted]
