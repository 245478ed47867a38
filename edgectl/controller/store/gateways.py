"""Gateways: registration, the pools each serves, agent tokens and reported status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.auth import hash_token, new_token
from edgectl.controller.errors import Conflict, Invalid, NotFound
from edgectl.controller.store import loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Change, Store
from edgectl.model import DesiredState, GatewaySettings, lint
from edgectl.model.serial import settings_to_data


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    name: str
    settings: GatewaySettings
    pools: tuple[str, ...]


def _row(connection: Connection, name: str) -> Any:
    row = connection.execute(sa.select(t.gateways).where(t.gateways.c.name == name)).first()
    if row is None:
        raise NotFound(f"no gateway named {name!r}")
    return row


def gateway_id(store: Store, name: str) -> int:
    with store.read() as connection:
        return int(_row(connection, name).id)


def _pool_names(connection: Connection, gateway: int) -> list[str]:
    rows = connection.execute(
        sa.select(t.pools.c.name)
        .join(t.gateway_pools, t.gateway_pools.c.pool_id == t.pools.c.id)
        .where(t.gateway_pools.c.gateway_id == gateway)
        .order_by(t.pools.c.name)
    )
    return list(rows.scalars())


def _status(connection: Connection, gateway: int) -> dict[str, Any] | None:
    row = connection.execute(
        sa.select(t.gateway_status).where(t.gateway_status.c.gateway_id == gateway)
    ).first()
    if row is None:
        return None
    return {
        "applied_revision": row.applied_revision,
        "reported_at": row.reported_at.isoformat(),
        "detail": json.loads(row.detail),
    }


def _public(connection: Connection, row: Any) -> dict[str, Any]:
    status = _status(connection, row.id)
    return {
        "name": row.name,
        "settings": json.loads(row.settings),
        "pools": _pool_names(connection, row.id),
        "revision": row.revision,
        "status": status,
        "converged": status is not None and status["applied_revision"] == row.revision,
    }


def _audit_form(spec: GatewaySpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "settings": settings_to_data(spec.settings),
        "pools": list(spec.pools),
    }


def list_gateways(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        rows = connection.execute(sa.select(t.gateways).order_by(t.gateways.c.name)).all()
        return [_public(connection, row) for row in rows]


def get_gateway(store: Store, name: str) -> dict[str, Any]:
    with store.read() as connection:
        return _public(connection, _row(connection, name))


def _check(change: Change, spec: GatewaySpec) -> list[int]:
    """Pool ids for the spec, refusing unknown pools and settings lint refuses."""
    ids = dict(change.connection.execute(sa.select(t.pools.c.name, t.pools.c.id)).all())
    for index, name in enumerate(spec.pools):
        if name not in ids:
            raise Invalid(f"pools[{index}]", f"no pool named {name!r}")
    if len(set(spec.pools)) != len(spec.pools):
        raise Invalid("pools", "lists a pool twice")
    catalogue = loaders.catalogue(change.connection)
    state = DesiredState(
        gateway=spec.name,
        revision=0,
        settings=spec.settings,
        pools=tuple(catalogue.pools[name] for name in spec.pools),
        relays=catalogue.relays,
        rate_limits=tuple(catalogue.profiles.values()),
    )
    for problem in lint(state):
        if problem.path.startswith("settings"):
            raise Invalid(problem.path, problem.reason)
    return [ids[name] for name in spec.pools]


def _set_pools(change: Change, gateway: int, pool_ids: list[int]) -> None:
    change.connection.execute(
        sa.delete(t.gateway_pools).where(t.gateway_pools.c.gateway_id == gateway)
    )
    if pool_ids:
        change.connection.execute(
            sa.insert(t.gateway_pools),
            [{"gateway_id": gateway, "pool_id": pool} for pool in pool_ids],
        )
    change.rebuild.add(gateway)
    change.structure = True


def create_gateway(store: Store, actor: str, spec: GatewaySpec) -> tuple[dict[str, Any], str]:
    """Register a gateway; returns it and its agent token, shown this once only."""
    token = new_token()
    with store.write(actor) as change:
        exists = change.connection.execute(
            sa.select(t.gateways.c.id).where(t.gateways.c.name == spec.name)
        ).first()
        if exists is not None:
            raise Conflict(f"a gateway named {spec.name!r} exists")
        pool_ids = _check(change, spec)
        gateway = change.connection.execute(
            sa.insert(t.gateways)
            .values(
                name=spec.name,
                settings=json.dumps(settings_to_data(spec.settings)),
                token_hash=hash_token(token),
                revision=change.seq,
                structure="",
                structure_seq=change.seq,
                horizon=change.seq,
            )
            .returning(t.gateways.c.id)
        ).scalar_one()
        _set_pools(change, gateway, pool_ids)
        change.audit("gateway.create", "gateway", spec.name, None, _audit_form(spec))
    return get_gateway(store, spec.name), token


def update_gateway(
    store: Store,
    actor: str,
    name: str,
    settings: GatewaySettings | None,
    pools: tuple[str, ...] | None,
) -> dict[str, Any]:
    with store.write(actor) as change:
        row = _row(change.connection, name)
        before = GatewaySpec(
            name, loaders.settings_of(row.settings), tuple(_pool_names(change.connection, row.id))
        )
        after = GatewaySpec(
            name,
            before.settings if settings is None else settings,
            before.pools if pools is None else pools,
        )
        pool_ids = _check(change, after)
        change.connection.execute(
            sa.update(t.gateways)
            .where(t.gateways.c.id == row.id)
            .values(settings=json.dumps(settings_to_data(after.settings)))
        )
        _set_pools(change, row.id, pool_ids)
        change.audit("gateway.update", "gateway", name, _audit_form(before), _audit_form(after))
    return get_gateway(store, name)


def rotate_token(store: Store, actor: str, name: str) -> str:
    token = new_token()
    with store.write(actor) as change:
        row = _row(change.connection, name)
        change.connection.execute(
            sa.update(t.gateways)
            .where(t.gateways.c.id == row.id)
            .values(token_hash=hash_token(token))
        )
        change.credentials = True  # the old token stops working at once
        change.audit("gateway.rotate_token", "gateway", name, None, None)
    return token


def delete_gateway(store: Store, actor: str, name: str) -> None:
    with store.write(actor) as change:
        row = _row(change.connection, name)
        before = GatewaySpec(
            name, loaders.settings_of(row.settings), tuple(_pool_names(change.connection, row.id))
        )
        for table in (t.entries, t.gateway_pools, t.gateway_status):
            change.connection.execute(sa.delete(table).where(table.c.gateway_id == row.id))
        change.connection.execute(sa.delete(t.gateways).where(t.gateways.c.id == row.id))
        change.structure = True
        change.credentials = True  # its agent token goes with it
        change.audit("gateway.delete", "gateway", name, _audit_form(before), None)


def report_status(
    store: Store, actor: str, name: str, applied: int, detail: dict[str, Any], at: datetime
) -> dict[str, Any]:
    """An agent's report; not audited (it is telemetry, not a change to policy)."""
    with store.write(actor) as change:
        row = _row(change.connection, name)
        if applied > row.revision:
            raise Invalid("applied_revision", f"{applied} is ahead of revision {row.revision}")
        change.connection.execute(
            sa.delete(t.gateway_status).where(t.gateway_status.c.gateway_id == row.id)
        )
        change.connection.execute(
            sa.insert(t.gateway_status).values(
                gateway_id=row.id,
                applied_revision=applied,
                reported_at=at,
                detail=json.dumps(detail),
            )
        )
    return get_gateway(store, name)
