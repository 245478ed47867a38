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
            sa.select(t.gateways.c.revision).where(t.gateways.c.id == gateway)
        ).scalar_one_or_none()
    if found is None:
        raise NotFound("the gateway was deleted")
    return int(found)


def revisions(store: Store) -> tuple[dict[int, int], str | None]:
    """Every gateway's revision, and the store's epoch (the long-poll re-check for
    other processes' changes); one query."""
    with store.read() as connection:
        rows = connection.execute(
            sa.select(t.gateways.c.id, t.gateways.c.revision).add_columns(_EPOCH)
        ).all()
        if not rows:
            return {}, connection.execute(sa.select(_EPOCH)).scalar_one_or_none()
        return {int(row.id): int(row.revision) for row in rows}, rows[0].epoch


def _structure_fields(structure: str) -> str:
    """The structure document's members, to splice into a state or delta body."""
    return structure[1:-1]


# The epoch rides along with the gateway rows (a scalar subquery): knowing it
# costs no query of its own on the long-poll path.
_EPOCH = sa.select(t.counter.c.epoch).where(t.counter.c.id == 1).scalar_subquery().label("epoch")

_ROW = sa.select(
    t.gateways.c.id,
    t.gateways.c.name,
    t.gateways.c.revision,
    t.gateways.c.structure,
    t.gateways.c.structure_seq,
    t.gateways.c.horizon,
    _EPOCH,
)

# (gateway, since, epoch): what a long-poll asks for.
Wanted = tuple[int, int | None, str | None]


def serve(store: Store, gateway: int, since: int | None, epoch: str | None = None) -> Served:
    """A snapshot, or the delta since ``since``; both read in one snapshot of the store.

    ``epoch`` is the store epoch the caller's cursor belongs to (None: an
    agent that predates epochs, served as before).
    """
    with store.read() as connection:
        row = connection.execute(_ROW.where(t.gateways.c.id == gateway)).first()
        if row is None:
            raise NotFound("the gateway was deleted")
        return _serve_row(store, connection, row, since, epoch)


def serve_many(store: Store, wanted: Sequence[Wanted]) -> list[Served | NotFound]:
    """``serve`` for many (gateway, since) at once: one transaction, one gateway query.

    What a change costs when many agents were waiting for it: one trip to
    a worker thread and the database instead of one per agent.  Each answer
    is exactly what ``serve`` would have given, or the NotFound it would
    have raised.
    """
    with store.read() as connection:
        ids = sorted({gateway for gateway, _, _ in wanted})
        rows = {row.id: row for row in connection.execute(_ROW.where(t.gateways.c.id.in_(ids)))}
        answers: list[Served | NotFound] = []
        for gateway, since, epoch in wanted:
            row = rows.get(gateway)
            if row is None:
                answers.append(NotFound("the gateway was deleted"))
            else:
                answers.append(_serve_row(store, connection, row, since, epoch))
        return answers


def _serve_row(
    store: Store, connection: Connection, row: Any, since: int | None, epoch: str | None
) -> Served:
    gateway = int(row.id)
    foreign = epoch is not None and epoch != row.epoch
    # No cursor of this history is ahead of its gateway's revision: the
    # database went back under it (restored from a backup).
    ahead = since is not None and not foreign and since > row.revision
    # A cursor from before the horizon may have missed purged removals, one
    # from another epoch or from the future names a history this store does
    # not have: a snapshot, never a delta.
    if since is None or foreign or ahead or since < row.horizon:
        return _snapshot(connection, gateway, row, ahead)
    if since == row.revision:
        return _empty(row)
    key = (gateway, since, int(row.revision), row.epoch)
    body = store.bodies.get(key)
    if body is None:
        body = _delta(connection, gateway, row, since).body
        store.bodies.put(key, body)
    return Served("delta", row.revision, body, row.epoch)


def _head(row: Any) -> str:
    return f'"schema":{SCHEMA_VERSION},"gateway":{json.dumps(row.name)},'


def _envelope(kind: str, row: Any, body: str) -> str:
    """``{"kind", "revision", "epoch", kind: body}``: agents that predate the
    epoch read the envelope as before (they ignore members they do not know)."""
    return (
        f'{{"kind":"{kind}","revision":{row.revision},"epoch":{json.dumps(row.epoch)},'
        f'"{"state" if kind == "snapshot" else "delta"}":{body}}}'
    )


def _snapshot(connection: Connection, gateway: int, row: Any, ahead: bool = False) -> Served:
    e = t.entries
    live: dict[str, list[str]] = {QUARANTINE: [], EXEMPTION: []}
    for kind, payload in connection.execute(
        sa.select(e.c.kind, e.c.payload)
        .where(e.c.gateway_id == gateway, e.c.live)
        .order_by(e.c.kind, e.c.key)
    ):
        live[kind].append(payload)
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


def _delta(connection: Connection, gateway: int, row: Any, since: int) -> Served:
    e = t.entries
    upserts: dict[str, list[str]] = {QUARANTINE: [], EXEMPTION: []}
    removals: dict[str, list[str]] = {QUARANTINE: [], EXEMPTION: []}
    for kind, key, payload, is_live in connection.execute(
        sa.select(e.c.kind, e.c.key, e.c.payload, e.c.live)
        .where(e.c.gateway_id == gateway, e.c.seq > since, e.c.seq <= row.revision)
        .order_by(e.c.seq, e.c.key)
    ):
        if is_live:
            upserts[kind].append(payload)
        else:
            removals[kind].append(json.dumps(key))
    changed = row.structure_seq > since
    structure = "{" + _structure_fields(row.structure) + "}" if changed else "null"

    def changes(kind: str) -> str:
        return f'{{"upserts":[{",".join(upserts[kind])}],"removals":[{",".join(removals[kind])}]}}'

    delta = (
        "{" + _head(row) + f'"from_revision":{since},"to_revision":{row.revision},'
        f'"structure":{structure},"quarantines":{changes(QUARANTINE)},'
        f'"exemptions":{changes(EXEMPTION)}' + "}"
    )
    return Served("delta", row.revision, _envelope("delta", row, delta), row.epoch)
