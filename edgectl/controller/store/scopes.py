"""Entry scopes: gateways whose entries compile from the same inputs share them.

A gateway's quarantine and exemption entries depend on the pools it serves
(which pool claims an address, nested pools included) and on whether it has
a walled garden (a mode that needs one falls back without it); relays and
holds are the same for every gateway.  Gateways that agree on both get the
same entries, so they are compiled and stored once per scope: a quarantine
at 1,000 gateways of the same pools writes one entry, not 1,000.

A gateway whose inputs change (its pools, its settings' garden, a pool it
serves deleted) moves to the scope of its new signature, made and compiled
whole if no gateway had it.  Its horizon moves to that change: the entries'
sequence numbers are the new scope's history, which its agent never
followed, so any cursor from before the move is answered with a snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.compile import Catalogue, PlacedPool, Topology
from edgectl.controller.store import loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change


def signature(pool_ids: Iterable[int], garden: bool) -> str:
    """The scope a gateway belongs to, named by what its entries compile from."""
    text = f"pools={','.join(str(p) for p in sorted(pool_ids))};garden={int(garden)}"
    return hashlib.sha256(text.encode()).hexdigest()


def regroup(change: Change, garden: frozenset[int]) -> set[int]:
    """Put every gateway in the scope of its signature; returns the scopes made.

    ``garden``: the gateways with a walled garden, as this change's topology
    says.  Moved gateways join ``change.touched`` with their horizon at this
    change; scopes left without a gateway are deleted with their entries.
    """
    connection = change.connection
    served: dict[int, list[int]] = {}
    for gateway, pool in connection.execute(
        sa.select(t.gateway_pools.c.gateway_id, t.gateway_pools.c.pool_id)
    ):
        served.setdefault(gateway, []).append(pool)
    scopes = dict(
        connection.execute(sa.select(t.entry_scopes.c.signature, t.entry_scopes.c.id)).all()
    )
    made: set[int] = set()
    moves: dict[int, list[int]] = {}  # scope -> gateways moving into it
    kept: set[int] = set()
    for gateway, current in connection.execute(sa.select(t.gateways.c.id, t.gateways.c.scope_id)):
        wanted = signature(served.get(gateway, ()), gateway in garden)
        scope = scopes.get(wanted)
        if scope is None:
            scope = connection.execute(
                sa.insert(t.entry_scopes).values(signature=wanted).returning(t.entry_scopes.c.id)
            ).scalar_one()
            scopes[wanted] = scope
            made.add(scope)
        kept.add(scope)
        if scope != current:
            moves.setdefault(scope, []).append(gateway)
    for scope, gateways in moves.items():
        connection.execute(
            sa.update(t.gateways)
            .where(t.among(t.gateways.c.id, gateways))
            .values(scope_id=scope, horizon=change.seq, scope_seq=change.seq)
        )
        change.touched.update(gateways)
    empty = set(scopes.values()) - kept
    if empty:
        for table in (t.entries, t.scope_revisions):
            connection.execute(sa.delete(table).where(t.among(table.c.scope_id, empty)))
        connection.execute(sa.delete(t.entry_scopes).where(t.among(t.entry_scopes.c.id, empty)))
    return made


def members(connection: Connection) -> dict[int, int]:
    """Gateway id -> its scope id."""
    return {
        int(gateway): int(scope)
        for gateway, scope in connection.execute(
            sa.select(t.gateways.c.id, t.gateways.c.scope_id).where(
                t.gateways.c.scope_id.is_not(None)
            )
        )
    }


def scoped(change: Change) -> Topology:
    """This change's topology over scopes (see ``_over_scopes``).

    Like ``loaders.view``: a change that edits the catalogue or gateways
    builds it fresh (after ``regroup``); any other reuses the store's copy
    while ``catalog_seq`` has not moved - a quarantine reads no gateway row.
    """
    editing = change.structure or bool(change.rebuild)
    catalogue, topology = loaders.view(change)
    views = change.views
    cached = None if views is None else views.scoped
    if not editing and cached is not None and cached[0] == change.catalog_seq:
        return cached[1]
    built = _over_scopes(topology, members(change.connection), catalogue)
    if not editing and views is not None:
        views.scoped = (change.catalog_seq, built)
    return built


def _over_scopes(topology: Topology, scope_of: Mapping[int, int], catalogue: Catalogue) -> Topology:
    """``topology`` with scopes in place of gateways: what compile places holds on.

    A pool is served by the scopes of the gateways serving it, and a scope
    has a garden when its gateways do (they agree: it is in the signature).
    """
    return Topology(
        (
            PlacedPool(
                placed.pool, frozenset(scope_of[g] for g in placed.gateways if g in scope_of)
            )
            for placed in topology.pools
        ),
        relays=(prefix for relay in catalogue.relays for prefix in relay.prefixes),
        garden=None
        if topology.garden is None
        else frozenset(scope_of[g] for g in topology.garden if g in scope_of),
    )
