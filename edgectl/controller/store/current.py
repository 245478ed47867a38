"""The current binding (``sessions``) as the session history says it, for what a write touched.

An account holds, per family, the address of its latest open interval that
is still the latest on that address (no later row started there).  That is
a function of the history alone, so the feed's binding does not depend on
the order its events came in; the result goes through ``subscribers.bind``
like a REST binding, so displaced holders, recompiles of held keys and the
agents' wake-ups are the REST routes' own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.compile import Topology, delegation_problem
from edgectl.controller.store import history, loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.subscribers import Binding, bind
from edgectl.model import Prefix

h = t.session_history
NOTHING = {"bindings": 0, "moved": 0, "displaced": 0}


def _holders(connection: Connection, version: int, hexes: Iterable[str]) -> set[int]:
    """Accounts the ``sessions`` table binds to these addresses now."""
    col = t.sessions.c.ipv4_hex if version == 4 else t.sessions.c.ipv6_hex
    query = sa.select(t.sessions.c.account_id)
    return {row.account_id for row in loaders.rows_in(connection, query, col, sorted(hexes))}


def _usable(topology: Topology, text: str | None, version: int) -> Prefix | None:
    """An address the binding may carry; a prefix a pool change made too short is left out."""
    if text is None:
        return None
    prefix = Prefix.parse(text)
    if version == 6 and delegation_problem(topology, prefix) is not None:
        return None
    return prefix


def follow(change: Change, accounts: set[int], hexes: dict[int, set[str]]) -> dict[str, int]:
    """Bring ``sessions`` in line with the history for ``accounts`` and addresses ``hexes``.

    ``hexes`` (by IP version) are the addresses whose rows changed: whoever
    is now their latest open row, and whoever ``sessions`` binds to them,
    is brought along.
    """
    connection = change.connection
    tops = {version: history.tops(connection, version, hexes[version]) for version in (4, 6)}
    everyone = set(accounts)
    for version in (4, 6):
        everyone.update(r.account_id for r in tops[version].values() if r.ended is None)
        everyone |= _holders(connection, version, hexes[version])
    if not everyone:
        return dict(NOTHING)
    query = (
        sa.select(*history.lean(), t.accounts.c.ref)
        .join(t.accounts, t.accounts.c.id == h.c.account_id)
        .where(t.open_interval())
    )
    open_rows = list(loaders.rows_in(connection, query, h.c.account_id, sorted(everyone)))
    for version in (4, 6):
        own = {getattr(r, f"ipv{version}_hex") for r in open_rows} - {None} - tops[version].keys()
        tops[version].update(history.tops(connection, version, own))
    chosen: dict[int, dict[int, Any]] = {}
    for row in open_rows:
        for version in (4, 6):
            value = getattr(row, f"ipv{version}_hex")
            top = tops[version].get(value) if value is not None else None
            if top is None or top.id != row.id:
                continue  # a later row started on this address: this one lost it
            best = chosen.setdefault(row.account_id, {}).get(version)
            if best is None or history.rank(row) > history.rank(best):
                chosen[row.account_id][version] = row
    refs = dict(
        loaders.rows_in(
            connection,
            sa.select(t.accounts.c.id, t.accounts.c.ref),
            t.accounts.c.id,
            sorted(everyone),
        )
    )
    now = {
        row.account_id: (row.ipv4, row.ipv6)
        for row in loaders.rows_in(
            connection,
            sa.select(t.sessions.c.account_id, t.sessions.c.ipv4, t.sessions.c.ipv6),
            t.sessions.c.account_id,
            sorted(everyone),
        )
    }
    _, topology = loaders.view(change)
    changed = []
    for account in sorted(everyone):
        rows = chosen.get(account, {})
        ipv4 = _usable(topology, rows[4].ipv4 if 4 in rows else None, 4)
        ipv6 = _usable(topology, rows[6].ipv6 if 6 in rows else None, 6)
        wanted = (None if ipv4 is None else str(ipv4), None if ipv6 is None else str(ipv6))
        if wanted != now.get(account, (None, None)):
            changed.append(Binding(refs[account], ipv4, ipv6))
    if not changed:
        return dict(NOTHING)
    return bind(change, changed, path="")
