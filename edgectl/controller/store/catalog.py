"""Pools, relays and rate-limit profiles: the rarely-changing catalogue."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.compile import Catalogue
from edgectl.controller.errors import Conflict, Invalid, NotFound
from edgectl.controller.store import loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store
from edgectl.model import DesiredState, Pool, RateLimitProfile, Relay, lint
from edgectl.model.serial import pool_to_data, profile_to_data, relay_to_data


def pool_public(pool: Pool, gateways: list[str]) -> dict[str, Any]:
    data = pool_to_data(pool)
    data.setdefault("op25b_shadow", False)
    data["gateways"] = gateways
    return data


def profile_public(profile: RateLimitProfile) -> dict[str, Any]:
    data = profile_to_data(profile)
    data.setdefault("shadow", False)
    return data


def _structure_problems(catalogue: Catalogue) -> set[tuple[str, str]]:
    state = DesiredState(
        gateway="catalogue",
        revision=0,
        pools=tuple(catalogue.pools.values()),
        relays=catalogue.relays,
        rate_limits=tuple(catalogue.profiles.values()),
    )
    return {(e.path, e.reason) for e in lint(state)}


def refuse_new_problems(before: Catalogue, after: Catalogue, label: str) -> None:
    """Refuse a change that makes the catalogue lint worse, naming the field.

    Problems that were already there (from before a lint rule existed) do
    not block unrelated changes.
    """
    new = sorted(_structure_problems(after) - _structure_problems(before))
    if not new:
        return
    path, reason = new[0]
    inner = path.partition("]")[2].lstrip(".")
    raise Invalid(inner or label, reason)


def _gateways_of(connection: Connection, pool_id: int) -> list[str]:
    rows = connection.execute(
        sa.select(t.gateways.c.name)
        .join(t.gateway_pools, t.gateway_pools.c.gateway_id == t.gateways.c.id)
        .where(t.gateway_pools.c.pool_id == pool_id)
        .order_by(t.gateways.c.name)
    )
    return list(rows.scalars())


def _pool_row(connection: Connection, name: str) -> Any:
    return _named(connection, t.pools, name, "pool")


def list_pools(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        rows = connection.execute(sa.select(t.pools).order_by(t.pools.c.name)).all()
        return [pool_public(loaders.pool_of(r), _gateways_of(connection, r.id)) for r in rows]


def get_pool(store: Store, name: str) -> dict[str, Any]:
    with store.read() as connection:
        row = _pool_row(connection, name)
        return pool_public(loaders.pool_of(row), _gateways_of(connection, row.id))


def _pool_values(pool: Pool) -> dict[str, Any]:
    return {
        "name": pool.name,
        "kind": pool.kind.value,
        "prefixes": json.dumps([str(p) for p in pool.prefixes]),
        "subscriber_prefix_len": pool.subscriber_prefix_len,
        "rate_limit": pool.rate_limit,
        "op25b_shadow": pool.op25b_shadow,
    }


def _check_pool(change: Change, pool: Pool, replacing: str | None) -> None:
    before = loaders.catalogue(change.connection)
    if pool.rate_limit is not None and pool.rate_limit not in before.profiles:
        raise Invalid("rate_limit", f"no rate-limit profile named {pool.rate_limit!r}")
    pools = {name: p for name, p in before.pools.items() if name != replacing}
    pools[pool.name] = pool
    refuse_new_problems(before, replace(before, pools=pools), "prefixes")


def create_pool(store: Store, actor: str, pool: Pool) -> dict[str, Any]:
    with store.write(actor) as change:
        exists = change.connection.execute(
            sa.select(t.pools.c.id).where(t.pools.c.name == pool.name)
        )
        if exists.first() is not None:
            raise Conflict(f"a pool named {pool.name!r} exists")
        _check_pool(change, pool, None)
        change.connection.execute(sa.insert(t.pools).values(**_pool_values(pool)))
        change.structure = True
        public = pool_public(pool, [])
        change.audit("pool.create", "pool", pool.name, None, public)
    return public


def update_pool(store: Store, actor: str, pool: Pool) -> dict[str, Any]:
    with store.write(actor) as change:
        row = _pool_row(change.connection, pool.name)
        gateways = _gateways_of(change.connection, row.id)
        before = pool_public(loaders.pool_of(row), gateways)
        _check_pool(change, pool, pool.name)
        change.connection.execute(
            sa.update(t.pools).where(t.pools.c.id == row.id).values(**_pool_values(pool))
        )
        served = change.connection.execute(
            sa.select(t.gateway_pools.c.gateway_id).where(t.gateway_pools.c.pool_id == row.id)
        )
        change.rebuild.update(served.scalars())
        change.structure = True
        after = pool_public(pool, gateways)
        change.audit("pool.update", "pool", pool.name, before, after)
    return after


def delete_pool(store: Store, actor: str, name: str) -> None:
    with store.write(actor) as change:
        row = _pool_row(change.connection, name)
        gateways = _gateways_of(change.connection, row.id)
        if gateways:
            raise Conflict(f"pool {name!r} is served by {', '.join(gateways)}; detach it first")
        change.connection.execute(sa.delete(t.pools).where(t.pools.c.id == row.id))
        change.structure = True
        change.audit("pool.delete", "pool", name, pool_public(loaders.pool_of(row), []), None)


# Relays and profiles: named rows, created or replaced whole -----------------


def _named(connection: Connection, table: sa.Table, name: str, what: str) -> Any:
    row = connection.execute(sa.select(table).where(table.c.name == name)).first()
    if row is None:
        raise NotFound(f"no {what} named {name!r}")
    return row


def _put(change: Change, table: sa.Table, values: dict[str, Any], create: bool, what: str) -> Any:
    """Insert (create) or replace a named row; returns the row as it was, or None."""
    name = values["name"]
    existing = change.connection.execute(sa.select(table).where(table.c.name == name)).first()
    if create and existing is not None:
        raise Conflict(f"a {what} named {name!r} exists")
    if not create and existing is None:
        raise NotFound(f"no {what} named {name!r}")
    if existing is None:
        change.connection.execute(sa.insert(table).values(**values))
    else:
        change.connection.execute(
            sa.update(table).where(table.c.id == existing.id).values(**values)
        )
    change.structure = True
    return existing


def list_relays(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        rows = connection.execute(sa.select(t.relays).order_by(t.relays.c.name))
        return [relay_to_data(loaders.relay_of(r)) for r in rows]


def get_relay(store: Store, name: str) -> dict[str, Any]:
    with store.read() as connection:
        return relay_to_data(loaders.relay_of(_named(connection, t.relays, name, "relay")))


def put_relay(store: Store, actor: str, relay: Relay, *, create: bool) -> dict[str, Any]:
    values = {"name": relay.name, "prefixes": json.dumps([str(p) for p in relay.prefixes])}
    with store.write(actor) as change:
        before = loaders.catalogue(change.connection)
        relays = (*(r for r in before.relays if r.name != relay.name), relay)
        refuse_new_problems(before, replace(before, relays=relays), "prefixes")
        existing = _put(change, t.relays, values, create, "relay")
        old = None if existing is None else relay_to_data(loaders.relay_of(existing))
        after = relay_to_data(relay)
        action = "relay.create" if create else "relay.update"
        change.audit(action, "relay", relay.name, old, after)
    return after


def delete_relay(store: Store, actor: str, name: str) -> None:
    with store.write(actor) as change:
        row = _named(change.connection, t.relays, name, "relay")
        change.connection.execute(sa.delete(t.relays).where(t.relays.c.id == row.id))
        change.structure = True
        change.audit("relay.delete", "relay", name, relay_to_data(loaders.relay_of(row)), None)


def list_profiles(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        rows = connection.execute(sa.select(t.rate_limits).order_by(t.rate_limits.c.name))
        return [profile_public(loaders.profile_of(r)) for r in rows]


def get_profile(store: Store, name: str) -> dict[str, Any]:
    with store.read() as connection:
        row = _named(connection, t.rate_limits, name, "rate-limit profile")
        return profile_public(loaders.profile_of(row))


def put_profile(
    store: Store, actor: str, profile: RateLimitProfile, *, create: bool
) -> dict[str, Any]:
    values = {
        "name": profile.name,
        "new_per_minute": profile.new_per_minute,
        "burst": profile.burst,
        "concurrent": profile.concurrent,
        "per_destination": profile.per_destination,
        "shadow": profile.shadow,
    }
    with store.write(actor) as change:
        existing = _put(change, t.rate_limits, values, create, "rate-limit profile")
        old = None if existing is None else profile_public(loaders.profile_of(existing))
        after = profile_public(profile)
        action = "rate_limit.create" if create else "rate_limit.update"
        change.audit(action, "rate_limit", profile.name, old, after)
    return after


def delete_profile(store: Store, actor: str, name: str) -> None:
    with store.write(actor) as change:
        row = _named(change.connection, t.rate_limits, name, "rate-limit profile")
        users = (
            change.connection.execute(
                sa.select(t.pools.c.name)
                .where(t.pools.c.rate_limit == name)
                .order_by(t.pools.c.name)
            )
            .scalars()
            .all()
        )
        if users:
            raise Conflict(f"rate-limit profile {name!r} is used by pool(s) {', '.join(users)}")
        change.connection.execute(sa.delete(t.rate_limits).where(t.rate_limits.c.id == row.id))
        change.structure = True
        change.audit(
            "rate_limit.delete", "rate_limit", name, profile_public(loaders.profile_of(row)), None
        )
