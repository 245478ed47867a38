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


def revision(store: Store, gateway: int) -> int:
    with store.read() as connection:
        found = connection.execute(
            sa.select(t.gateways.c.revision).where(t.gateways.c.id == gateway)
        ).scalar_one_or_none()
    if found is None:
        raise NotFound("the gateway was deleted")
    return int(found)


def revisions(store: Store) -> dict[int, int]:
    """Every gateway's revision (the long-poll re-check for other processes' changes)."""
    with store.read() as connection:
        rows = connection.execute(sa.select(t.gateways.c.id, t.gateways.c.revision))
        return {int(gateway): int(revision) for gateway, revision in rows}


def _structure_fields(structure: str) -> str:
    """The structure document's members, to splice into a state or delta body."""
    return structure[1:-1]


_ROW = sa.select(
    t.gateways.c.id,
    t.gateways.c.name,
    t.gateways.c.revision,
    t.gateways.c.structure,
    t.gateways.c.structure_seq,
    t.gateways.c.horizon,
)


def serve(store: Store, gateway: int, since: int | None) -> Served:
    """A snapshot, or the delta since ``since``; both read in one snapshot of the store."""
    with store.read() as connection:
        row = connection.execute(_ROW.where(t.gateways.c.id == gateway)).first()
        if row is None:
            raise NotFound("the gateway was deleted")
        return _serve_row(store, connection, row, since)


def serve_many(store: Store, wanted: Sequence[tuple[int, int | None]]) -> list[Served | NotFound]:
    """``serve`` for many (gateway, since) at once: one transaction, one gateway query.

    What a change costs when many agents were waiting for it: one trip to
    a worker thread and the database instead of one per agent.  Each answer
    is exactly what ``serve`` would have given, or the NotFound it would
    have raised.
    """
    with store.read() as connection:
        ids = sorted({gateway for gateway, _ in wanted})
        rows = {row.id: row for row in connection.execute(_ROW.where(t.gateways.c.id.in_(ids)))}
        answers: list[Served | NotFound] = []
        for gateway, since in wanted:
            row = rows.get(gateway)
            if row is None:
                answers.append(NotFound("the gateway was deleted"))
            else:
                answers.append(_serve_row(store, connection, row, since))
        return answers


def _serve_row(store: Store, connection: Connection, row: Any, since: int | None) -> Served:
    gateway = int(row.id)
    # A cursor from before the horizon may have missed purged removals,
    # and one from the future (a restored database) is simply unknown.
    if since is None or since < row.horizon or since > row.revision:
        return _snapshot(connection, gateway, row)
    if since == row.revision:
        return _empty(row)
    key = (gateway, since, int(row.revision))
    body = store.bodies.get(key)
    if body is None:
        body = _delta(connection, gateway, row, since).body
        store.bodies.put(key, body)
    return Served("delta", row.revision, body)


def _head(row: Any) -> str:
    return f'"schema":{SCHEMA_VERSION},"gateway":{json.dumps(row.name)},'


def _snapshot(connection: Connection, gateway: int, row: Any) -> Served:
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
    body = f'{{"kind":"snapshot","revision":{row.revision},"state":{state}}}'
    return Served("snapshot", row.revision, body)


def _empty(row: Any) -> Served:
    """The delta from the current revision to itself (no entries to read)."""
    empty = '{"upserts":[],"removals":[]}'
    delta = (
        "{" + _head(row) + f'"from_revision":{row.revision},"to_revision":{row.revision},'
        f'"structure":null,"quarantines":{empty},"exemptions":{empty}' + "}"
    )
    body = f'{{"kind":"delta","revision":{row.revision},"delta":{delta}}}'
    return Served("delta", row.revision, body)


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
    body = f'{{"kind":"delta","revision":{row.revision},"delta":{delta}}}'
    return Served("delta", row.revision, body)
