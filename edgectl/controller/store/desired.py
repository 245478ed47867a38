"""Serve a gateway's compiled state: a snapshot, or the changes since a cursor.

Bodies are assembled from the stored JSON fragments without parsing them:
a 100,000-quarantine snapshot is one indexed scan and a string join.  The
shapes are exactly the model's ``state_to_data`` and ``delta_to_data``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.compile import EXEMPTION, QUARANTINE
from edgectl.controller.errors import NotFound
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store
from edgectl.model.serial import SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Served:
    kind: str  # "snapshot" or "delta"
    revision: int
    body: str  # the JSON document, wrapper included
    epoch: str | None = None  # the store's epoch the answer belongs to
    # The caller's cursor was ahead of the gateway's revision in this epoch:
    # the database went back in time under it (restored), see store.epoch.
    ahead: bool = False


def revision(store: Store, gateway: int) -> int:
    with store.read() as connection:
        found = connection.execute(
            sa.select(t.wanted_revision()).where(t.gateways.c.id == gateway)
        ).scalar_one_or_none()
    if found is None:
        raise NotFound("the gateway was deleted")
    return int(found)


@dataclass(frozen=True, slots=True)
class Revisions:
    """What the periodic re-check reads, in one query."""

    gateways: dict[int, int]  # gateway id -> revision
    epoch: str | None
    credentials: int  # the change that last took a credential away


_CREDENTIALS = (
    sa.select(t.counter.c.credentials_seq)
    .where(t.counter.c.id == 1)
    .scalar_subquery()
    .label("credentials")
)


def revisions(store: Store) -> Revisions:
    """Every gateway's revision, the store's epoch and credentials sequence (the
    re-check for other processes' changes); one query."""
    with store.read() as connection:
        rows = connection.execute(
            sa.select(t.gateways.c.id, t.wanted_revision()).add_columns(_EPOCH, _CREDENTIALS)
        ).all()
        if not rows:
            row = connection.execute(sa.select(_EPOCH, _CREDENTIALS)).one()
            return Revisions({}, row.epoch, int(row.credentials))
        found = {int(row.id): int(row.revision) for row in rows}
        return Revisions(found, rows[0].epoch, int(rows[0].credentials))


def _structure_fields(structure: str) -> str:
    """The structure document's members, to splice into a state or delta body."""
    return structure[1:-1]


# The epoch rides along with the gateway rows (a scalar subquery): knowing it
# costs no query of its own on the long-poll path.
_EPOCH = sa.select(t.counter.c.epoch).where(t.counter.c.id == 1).scalar_subquery().label("epoch")

_ROW = sa.select(
    t.gateways.c.id,
    t.gateways.c.name,
    t.wanted_revision(),
    t.gateways.c.structure,
    t.gateways.c.structure_seq,
    t.gateways.c.horizon,
    t.gateways.c.scope_id,
    _EPOCH,
)

# (gateway, since, epoch): what a long-poll asks for.
Wanted = tuple[int, int | None, str | None]


def serve(store: Store, gateway: int, since: int | None, epoch: str | None = None) -> Served:
    """A snapshot, or the delta since ``since``; both read in one snapshot of the store.

    ``epoch`` is the store epoch the caller's cursor belongs to (None: an
    agent that predates epochs, served as before).
    """
    (answer,) = serve_many(store, [(gateway, since, epoch)])
    if isinstance(answer, NotFound):
        raise answer
    return answer


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one request needs: ``kind`` is snapshot, empty or delta."""

    kind: str
    row: Any
    since: int | None = None
    ahead: bool = False
    body: str | None = None  # a delta body found in the cache


def _plan(store: Store, row: Any, since: int | None, epoch: str | None) -> _Plan:
    foreign = epoch is not None and epoch != row.epoch
    # No cursor of this history is ahead of its gateway's revision: the
    # database went back under it (restored from a backup).
    ahead = since is not None and not foreign and since > row.revision
    # A cursor from before the horizon may have missed purged removals, one
    # from another epoch or from the future names a history this store does
    # not have: a snapshot, never a delta.
    if since is None or foreign or ahead or since < row.horizon:
        return _Plan("snapshot", row, ahead=ahead)
    if since == row.revision:
        return _Plan("empty", row)
    body = store.bodies.get((int(row.id), since, int(row.revision), row.epoch))
    return _Plan("delta", row, since, body=body)


def serve_many(store: Store, wanted: Sequence[Wanted]) -> list[Served | NotFound]:
    """``serve`` for many (gateway, since, epoch) at once, in one transaction.

    What a change costs when many agents were waiting for it: at most three
    queries however many agents and gateways the batch holds - the gateway
    rows, the entries every missing delta needs (each entry scope's changes
    since its gateways' lowest cursor, one statement for all), and the live
    entries of the scopes whose gateways need a snapshot.  Gateways of one
    scope read its entries once.  A gateway's delta from one
    cursor is assembled once and shared by every agent waiting on it (and
    kept in ``store.bodies`` for the next batch).  Each answer is exactly
    what ``serve`` would have given, or the NotFound it would have raised.
    """
    with store.read() as connection:
        ids = sorted({gateway for gateway, _, _ in wanted})
        rows = {
            row.id: row for row in connection.execute(_ROW.where(t.among(t.gateways.c.id, ids)))
        }
        plans: list[_Plan | None] = []
        # scope -> (lowest cursor whose delta must be read, highest revision)
        bounds: dict[int, tuple[int, int]] = {}
        snapshots: set[int] = set()  # scopes whose live entries must be read
        for gateway, since, epoch in wanted:
            row = rows.get(gateway)
            plan = None if row is None else _plan(store, row, since, epoch)
            plans.append(plan)
            if plan is None:
                continue
            scope = int(plan.row.scope_id)
            if plan.kind == "snapshot":
                snapshots.add(scope)
            elif plan.kind == "delta" and plan.body is None:
                assert plan.since is not None
                low, high = bounds.get(scope, (plan.since, int(plan.row.revision)))
                bounds[scope] = (min(low, plan.since), max(high, int(plan.row.revision)))
        changes = _changes(connection, bounds)
        live = _live(connection, snapshots)
        answers: list[Served | NotFound] = []
        built: dict[tuple[int, int], str] = {}  # this batch's deltas, by (gateway, since)
        for plan in plans:
            if plan is None:
                answers.append(NotFound("the gateway was deleted"))
            elif plan.kind == "snapshot":
                answers.append(
                    _snapshot(plan.row, live.get(int(plan.row.scope_id), []), plan.ahead)
                )
            elif plan.kind == "empty":
                answers.append(_empty(plan.row))
            else:
                answers.append(_delta_answer(store, plan, changes, built))
        return answers


def _delta_answer(
    store: Store, plan: _Plan, changes: dict[int, list[Any]], built: dict[tuple[int, int], str]
) -> Served:
    row, since = plan.row, plan.since
    assert since is not None
    gateway = int(row.id)
    body = plan.body or built.get((gateway, since))
    if body is None:
        found = changes.get(int(row.scope_id), [])
        body = _delta(row, since, [c for c in found if since < c.seq <= row.revision])
        built[(gateway, since)] = body
        store.bodies.put((gateway, since, int(row.revision), row.epoch), body)
    return Served("delta", row.revision, body, row.epoch)


def _changes(connection: Connection, bounds: dict[int, tuple[int, int]]) -> dict[int, list[Any]]:
    """Each scope's entries changed after its lowest cursor, up to its gateways'
    highest revision, in (seq, key) order: one statement for them all.

    Gateways woken by one change mostly share both bounds, so the condition
    is one ``IN`` per distinct (since, revision), not one term per scope.
    """
    if not bounds:
        return {}
    e = t.entries
    groups: dict[tuple[int, int], list[int]] = {}
    for scope, bound in bounds.items():
        groups.setdefault(bound, []).append(scope)
    condition = sa.or_(
        *(
            sa.and_(t.among(e.c.scope_id, scopes), e.c.seq > since, e.c.seq <= revision)
            for (since, revision), scopes in groups.items()
        )
    )
    found: dict[int, list[Any]] = {}
    for entry in connection.execute(
        sa.select(e.c.scope_id, e.c.kind, e.c.key, e.c.payload, e.c.live, e.c.seq)
        .where(condition)
        .order_by(e.c.scope_id, e.c.seq, e.c.key)
    ):
        found.setdefault(int(entry.scope_id), []).append(entry)
    return found


def _live(connection: Connection, scopes: set[int]) -> dict[int, list[Any]]:
    """The live entries of ``scopes`` in (kind, key) order: one statement."""
    if not scopes:
        return {}
    e = t.entries
    found: dict[int, list[Any]] = {}
    for entry in connection.execute(
        sa.select(e.c.scope_id, e.c.kind, e.c.payload)
        .where(t.among(e.c.scope_id, scopes), e.c.live)
        .order_by(e.c.scope_id, e.c.kind, e.c.key)
    ):
        found.setdefault(int(entry.scope_id), []).append(entry)
    return found


def _head(row: Any) -> str:
    return f'"schema":{SCHEMA_VERSION},"gateway":{json.dumps(row.name)},'


def _envelope(kind: str, row: Any, body: str) -> str:
    """``{"kind", "revision", "epoch", kind: body}``: agents that predate the
    epoch read the envelope as before (they ignore members they do not know)."""
    return (
        f'{{"kind":"{kind}","revision":{row.revision},"epoch":{json.dumps(row.epoch)},'
        f'"{"state" if kind == "snapshot" else "delta"}":{body}}}'
    )


def _snapshot(row: Any, entries: Sequence[Any], ahead: bool = False) -> Served:
    live: dict[str, list[str]] = {QUARANTINE: [], EXEMPTION: []}
    for entry in entries:
        live[entry.kind].append(entry.payload)
    state = (
        "{" + _head(row) + f'"revision":{row.revision},{_structure_fields(row.structure)},'
        f'"exemptions":[{",".join(live[EXEMPTION])}],'
        f'"quarantines":[{",".join(live[QUARANTINE])}]' + "}"
    )
    return Served("snapshot", row.revision, _envelope("snapshot", row, state), row.epoch, ahead)


def _empty(row: Any) -> Served:
    """The delta from the current revision to itself (no entries to read)."""
    empty = '{"upserts":[],"removals":[]}'
    delta = (
        "{" + _head(row) + f'"from_revision":{row.revision},"to_revision":{row.revision},'
        f'"structure":null,"quarantines":{empty},"exemptions":{empty}' + "}"
    )
    return Served("delta", row.revision, _envelope("delta", row, delta), row.epoch)


def _delta(row: Any, since: int, entries: Sequence[Any]) -> str:
    """The delta body from ``since``, given the entries changed after it in (seq, key) order."""
    upserts: dict[str, list[str]] = {QUARANTINE: [], EXEMPTION: []}
    removals: dict[str, list[str]] = {QUARANTINE: [], EXEMPTION: []}
    for entry in entries:
        if entry.live:
            upserts[entry.kind].append(entry.payload)
        else:
            removals[entry.kind].append(json.dumps(entry.key))
    changed = row.structure_seq > since
    structure = "{" + _structure_fields(row.structure) + "}" if changed else "null"

    def changes(kind: str) -> str:
        return f'{{"upserts":[{",".join(upserts[kind])}],"removals":[{",".join(removals[kind])}]}}'

    delta = (
        "{" + _head(row) + f'"from_revision":{since},"to_revision":{row.revision},'
        f'"structure":{structure},"quarantines":{changes(QUARANTINE)},'
        f'"exemptions":{changes(EXEMPTION)}' + "}"
    )
    return _envelope("delta", row, delta)
