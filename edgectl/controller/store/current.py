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
from edgectl.controller.store.subscribers import Binding, Holders, bind
from edgectl.model import Prefix

h = t.session_history
NOTHING = {"bindings": 0, "moved": 0, "displaced": 0}


def _holders(connection: Connection, version: int, hexes: Iterable[str]) -> dict[str, int]:
    """The account the ``sessions`` table binds each of these addresses to now."""
    col = t.sessions.c.ipv4_hex if version == 4 else t.sessions.c.ipv6_hex
    query = sa.select(col, t.sessions.c.account_id)
    return dict(loaders.rows_in(connection, query, col, sorted(hexes)))


def _usable(topology: Topology, text: str | None, version: int) -> str | None:
    """An address the binding may carry; a prefix a pool change made too short is left out."""
    if text is None or version == 4:
        return text
    return None if delegation_problem(topology, Prefix.parse(text)) is not None else text


def _open_rows(connection: Connection, accounts: set[int]) -> list[Any]:
    """The open rows of ``accounts``.

    ``started`` comes back as the driver gives it (SQLite: the stored text,
    whose order is the time order), not converted: it is only compared with
    other rows of this same read, and converting it was a fifth of a feed
    batch's derivation.
    """
    query = sa.select(
        *(h.c[name] for name in _LEAN),
        sa.type_coerce(h.c.started, sa.String()).label("started"),
    ).where(t.open_interval())
    return list(loaders.rows_in(connection, query, h.c.account_id, sorted(accounts)))


_LEAN = ("id", "account_id", "source", "session_id", "ipv4", "ipv4_hex", "ipv6", "ipv6_hex")


def _refs(change: Change, accounts: set[int]) -> dict[int, str]:
    """Account refs: from the change's own cache (the feed's accounts are in it), the
    rest from the table (a join of every open row with ``accounts`` read them all)."""
    refs = {ident: ref for ref, ident in change.account_ids.items() if ident in accounts}
    missing = sorted(accounts - refs.keys())
    query = sa.select(t.accounts.c.id, t.accounts.c.ref)
    refs.update(loaders.rows_in(change.connection, query, t.accounts.c.id, missing))
    return refs


def follow(change: Change, accounts: set[int], hexes: dict[int, set[str]]) -> dict[str, int]:
    """Bring ``sessions`` in line with the history for ``accounts`` and addresses ``hexes``.

    ``hexes`` (by IP version) are the addresses whose rows changed: whoever
    is now their latest open row, and whoever ``sessions`` binds to them,
    is brought along.
    """
    connection = change.connection
    tops = {version: history.top_ids(connection, version, hexes[version]) for version in (4, 6)}
    everyone = set(accounts)
    holders = Holders(
        hexes, {version: _holders(connection, version, hexes[version]) for version in (4, 6)}
    )
    for version in (4, 6):
        everyone.update(r.account_id for r in tops[version].values() if r.open)
        everyone.update(holders.accounts[version].values())
    if not everyone:
        return dict(NOTHING)
    open_rows = _open_rows(connection, everyone)
    own = {4: {r.ipv4_hex for r in open_rows}, 6: {r.ipv6_hex for r in open_rows}}
    for version in (4, 6):
        unread = own[version] - {None} - tops[version].keys()
        tops[version].update(history.top_ids(connection, version, unread))
    # Per account and family, the best (rank, address text) among its open
    # rows still the latest on their address.
    chosen: dict[tuple[int, int], tuple[tuple[Any, str, str], str]] = {}
    for ident, account, source, session, ipv4, ipv4_hex, ipv6, ipv6_hex, started in open_rows:
        rank = (started, source, session or "")  # the history's order: the larger wins
        for version, text, value in ((4, ipv4, ipv4_hex), (6, ipv6, ipv6_hex)):
            if value is None:
                continue
            top = tops[version].get(value)
            if top is None or top.id != ident:
                continue  # a later row started on this address: this one lost it
            best = chosen.get((account, version))
            if best is None or rank > best[0]:
                chosen[account, version] = (rank, text)
    refs = _refs(change, everyone)
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
        ipv4 = chosen.get((account, 4))
        ipv6 = chosen.get((account, 6))
        wanted = (
            None if ipv4 is None else ipv4[1],
            None if ipv6 is None else _usable(topology, ipv6[1], 6),
        )
        if wanted != now.get(account, (None, None)):
            v4, v6 = (None if text is None else Prefix.parse(text) for text in wanted)
            changed.append(Binding(refs[account], v4, v6))
    if not changed:
        return dict(NOTHING)
    return bind(change, changed, path="", old=now, holders=holders)
