"""Who held each of many (address, time) pairs: ``history.holder_at`` for a batch.

A feed of 10,000 reports would cost two statements each through
``holder_at``.  For IPv4 the rule is simple enough to apply in Python over
every interval of the addresses concerned, fetched in one statement: the
holder at T is the row that started on the address last at or before T
(ties by source, then session, as ``history.rank``), if it has not ended
by T.  IPv6 addresses go through ``holder_at`` (they match delegated
prefixes of many lengths); the unit tests hold the two to the same answers.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.compile import hex_of
from edgectl.controller.store import history, loaders
from edgectl.controller.store import schema as t
from edgectl.model import Prefix

h = t.session_history


def _found(row: Any, at: datetime, address: str, ended: datetime | None) -> dict[str, Any]:
    return {
        "account": row.ref,
        "account_id": row.account_id,
        "address": address,
        "at": at.isoformat(),
        "started": row.started.isoformat(),
        "ended": None if ended is None else ended.isoformat(),
        "source": row.source,
        "session_id": row.session_id,
    }


def holders(
    connection: Connection, wanted: Sequence[tuple[Prefix, datetime]]
) -> list[dict[str, Any] | None]:
    """For each (address, time): the holder as ``holder_at`` answers it (plus
    ``account_id``), or None."""
    answers: list[dict[str, Any] | None] = [None] * len(wanted)
    v4 = sorted({hex_of(address) for address, _ in wanted if address.version == 4})
    rows: dict[str, list[Any]] = {}
    query = sa.select(
        h.c.ipv4_hex,
        h.c.account_id,
        h.c.source,
        h.c.session_id,
        h.c.started,
        h.c.ended,
        t.accounts.c.ref,
    ).join(t.accounts, t.accounts.c.id == h.c.account_id)
    for row in loaders.rows_in(connection, query, h.c.ipv4_hex, v4):
        rows.setdefault(row.ipv4_hex, []).append(row)
    starts: dict[str, list[datetime]] = {}
    for value, found in rows.items():
        found.sort(key=history.rank)
        starts[value] = [row.started for row in found]
    for index, (address, at) in enumerate(wanted):
        if address.version == 6:
            single = history.holder_at(connection, address, at)
            if single is not None:
                single["account_id"] = _account_id(connection, single["account"])
            answers[index] = single
            continue
        value = hex_of(address)
        position = bisect.bisect_right(starts.get(value, []), at) - 1
        if position < 0:
            continue
        row = rows[value][position]
        if row.ended is not None and row.ended <= at:
            continue
        following = rows[value][position + 1 :]
        displaced = next((r.started for r in following if r.started > row.started), None)
        ended = history.held_until(row.ended, displaced)
        answers[index] = _found(row, at, str(address), ended)
    return answers


def _account_id(connection: Connection, ref: str) -> int:
    return int(
        connection.execute(sa.select(t.accounts.c.id).where(t.accounts.c.ref == ref)).scalar_one()
    )
