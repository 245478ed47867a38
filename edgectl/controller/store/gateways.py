"""Gateways: registration, the pools each serves, agent tokens and reported status."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.auth import hash_token, new_token
from edgectl.controller.errors import Conflict, ControllerError, Invalid, NotFound
from edgectl.controller.store import loaders, offenders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store, now
from edgectl.model import DesiredState, GatewaySettings, lint
from edgectl.model.serial import settings_to_data


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    name: str
    settings: GatewaySettings
    pools: tuple[str, ...]


def _row(connection: Connection, name: str) -> Any:
    row = connection.execute(t.gateway_row().where(t.gateways.c.name == name)).first()
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


Which = int | Collection[int] | None  # one gateway, some, or every one


def _only(query: sa.Select[Any], column: Any, gateway: Which) -> sa.Select[Any]:
    if gateway is None:
        return query
    if isinstance(gateway, int):
        return query.where(column == gateway)
    return query.where(t.among(column, gateway))


def served_pools(connection: Connection, gateway: Which = None) -> dict[int, list[str]]:
    """Pool names by gateway id (one gateway's, or everyone's in one query)."""
    gp = t.gateway_pools
    query = sa.select(gp.c.gateway_id, t.pools.c.name).join(t.pools, t.pools.c.id == gp.c.pool_id)
    served: dict[int, list[str]] = {}
    for row in connection.execute(_only(query, gp.c.gateway_id, gateway).order_by(t.pools.c.name)):
        served.setdefault(row.gateway_id, []).append(row.name)
    return served


def statuses(connection: Connection, gateway: Which = None) -> dict[int, Any]:
    """Status rows by gateway id."""
    s = t.gateway_status
    query = _only(sa.select(s), s.c.gateway_id, gateway)
    return {row.gateway_id: row for row in connection.execute(query)}


def pending_since(connection: Connection, gateway: Which = None) -> dict[int, datetime]:
    """By gateway id: when the first revision it has not reported applying was made.

    Converged gateways have no such revision and are absent.
    """
    r, s, g, sr = t.revisions, t.gateway_status, t.gateways, t.scope_revisions
    applied = sa.func.coalesce(s.c.applied_revision, -1)
    own = (
        sa.select(r.c.gateway_id, sa.func.min(r.c.at).label("since"))
        .select_from(r.outerjoin(s, s.c.gateway_id == r.c.gateway_id))
        .where(r.c.seq > applied)
        .group_by(r.c.gateway_id)
    )
    # Its scope's, since it joined the scope (the moves are its own).
    scoped = (
        sa.select(g.c.id.label("gateway_id"), sa.func.min(sr.c.at).label("since"))
        .select_from(
            g.join(sr, sr.c.scope_id == g.c.scope_id).outerjoin(s, s.c.gateway_id == g.c.id)
        )
        .where(sr.c.seq > applied, sr.c.seq > g.c.scope_seq)
        .group_by(g.c.id)
    )
    found: dict[int, datetime] = {}
    for query, column in ((own, r.c.gateway_id), (scoped, g.c.id)):
        for row in connection.execute(_only(query, column, gateway)):
            earlier = found.get(row.gateway_id)
            found[row.gateway_id] = row.since if earlier is None else min(earlier, row.since)
    return found


def _seconds(since: datetime, at: datetime) -> float:
    return round(max(0.0, (at - since).total_seconds()), 3)


def convergence(row: Any, status: Any, since: datetime | None, at: datetime) -> dict[str, Any]:
    """Revision wanted against applied, when the agent was last heard of, and the lag.

    ``lag_seconds`` runs from when the controller first wanted a revision
    the gateway has not applied; it is None once converged.
    """
    applied = None if status is None else int(status.applied_revision)
    converged = applied == row.revision
    return {
        "wanted_revision": row.revision,
        "applied_revision": applied,
        "converged": converged,
        "last_seen": None if status is None else status.reported_at.isoformat(),
        "seconds_since_seen": None if status is None else _seconds(status.reported_at, at),
        "lag_seconds": None if converged or since is None else _seconds(since, at),
    }


def _publics(connection: Connection, rows: Sequence[Any], gateway: Which) -> list[dict[str, Any]]:
    """Public forms of ``rows``: one query per kind of fact, not per gateway."""
    at = now()
    served = served_pools(connection, gateway)
    status = statuses(connection, gateway)
    since = pending_since(connection, gateway)
    reported = offenders.summaries(connection, gateway)
    found = []
    for row in rows:
        state = status.get(row.id)
        view = convergence(row, state, since.get(row.id), at)
        found.append(
            {
                "name": row.name,
                "settings": json.loads(row.settings),
                "pools": served.get(row.id, []),
                "revision": row.revision,
                "status": None
                if state is None
                else {
                    "applied_revision": state.applied_revision,
                    "reported_at": state.reported_at.isoformat(),
                    "detail": json.loads(state.detail),
                },
                "converged": view["converged"],
                "convergence": view,
                "offenders": reported.get(row.id),
            }
        )
    return found


def _audit_form(spec: GatewaySpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "settings": settings_to_data(spec.settings),
        "pools": list(spec.pools),
    }


def list_gateways(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        rows = connection.execute(t.gateway_row().order_by(t.gateways.c.name)).all()
        return _publics(connection, rows, None)


def get_gateway(store: Store, name: str) -> dict[str, Any]:
    with store.read() as connection:
        row = _row(connection, name)
        return _publics(connection, [row], row.id)[0]


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
        for table in (t.gateway_pools, t.gateway_status, t.revisions):
            change.connection.execute(sa.delete(table).where(table.c.gateway_id == row.id))
        offenders.forget(change, row.id)
        change.connection.execute(sa.delete(t.gateways).where(t.gateways.c.id == row.id))
        change.structure = True
        change.credentials = True  # its agent token goes with it
        change.audit("gateway.delete", "gateway", name, _audit_form(before), None)


@dataclass(frozen=True, slots=True)
class Report:
    """One agent's status report."""

    name: str
    applied: int
    detail: dict[str, Any]
    # None (agents that send no offenders) keeps the stored ones.
    offenders: offenders.OffenderReport | None = None


def report_status(
    store: Store,
    actor: str,
    name: str,
    applied: int,
    detail: dict[str, Any],
    reported: offenders.OffenderReport | None = None,
) -> dict[str, Any]:
    """An agent's report; not audited (it is telemetry, not a change to policy).

    ``reported`` (None from agents that send no offenders) replaces the
    gateway's offenders in the same transaction.
    """
    (answer,) = report_many(store, actor, [Report(name, applied, detail, reported)])
    if isinstance(answer, ControllerError):
        raise answer
    return answer


def report_many(
    store: Store, actor: str, reports: Sequence[Report]
) -> list[dict[str, Any] | ControllerError]:
    """Many agents' reports in one transaction, each answered on its own: its
    gateway's public form, or the refusal (NotFound, Invalid) it alone gets.

    What a change costs when every agent reports it: one commit, and the same
    few statements for 10 reports or 1,000 (those with offenders sections
    add their own).  A later report of the same gateway in the batch wins,
    as it would have one commit later.
    """
    answers: list[dict[str, Any] | ControllerError | None] = [None] * len(reports)
    with store.write(actor) as change:
        connection = change.connection
        names = sorted({report.name for report in reports})
        rows = {
            row.name: row
            for row in connection.execute(t.gateway_row().where(t.gateways.c.name.in_(names)))
        }
        taken: dict[int, tuple[Any, Report]] = {}  # gateway id -> (row, its last report)
        for index, report in enumerate(reports):
            row = rows.get(report.name)
            if row is None:
                answers[index] = NotFound(f"no gateway named {report.name!r}")
            elif report.applied > row.revision:
                answers[index] = Invalid(
                    "applied_revision", f"{report.applied} is ahead of revision {row.revision}"
                )
            else:
                taken[row.id] = (row, report)
        if taken:
            _record(change, taken)
    with store.read() as connection:
        ids = {row.id for row, _ in taken.values()}
        current = connection.execute(t.gateway_row().where(t.among(t.gateways.c.id, ids))).all()
        publics = {public["name"]: public for public in _publics(connection, current, ids)}
    for index, report in enumerate(reports):
        if answers[index] is None:
            found = publics.get(report.name)
            # Deleted between the two transactions: as if it had been before.
            answers[index] = found or NotFound(f"no gateway named {report.name!r}")
    return [answer for answer in answers if answer is not None]


def _forget_applied_scope_revisions(connection: Connection, scopes: set[int | None]) -> None:
    """The revisions of ``scopes`` every one of their gateways has applied, but
    the current one: one statement for the batch.  (Shared by the scope's
    gateways, so a gateway that has not reported keeps them; the sweeper
    forgets those past the retention.)"""
    ids = {scope for scope in scopes if scope is not None}
    if not ids:
        return
    g, s, sr, es = t.gateways, t.gateway_status, t.scope_revisions, t.entry_scopes
    lowest = (
        sa.select(sa.func.min(sa.func.coalesce(s.c.applied_revision, -1)))
        .select_from(g.outerjoin(s, s.c.gateway_id == g.c.id))
        .where(g.c.scope_id == sr.c.scope_id)
        .correlate(sr)
        .scalar_subquery()
    )
    current = sa.select(es.c.revision).where(es.c.id == sr.c.scope_id).correlate(sr)
    connection.execute(
        sa.delete(sr).where(
            t.among(sr.c.scope_id, ids), sr.c.seq <= lowest, sr.c.seq < current.scalar_subquery()
        )
    )


def _record(change: Change, taken: dict[int, tuple[Any, Report]]) -> None:
    connection = change.connection
    ids = sorted(taken)
    connection.execute(
        sa.delete(t.gateway_status).where(t.among(t.gateway_status.c.gateway_id, ids))
    )
    connection.execute(
        sa.insert(t.gateway_status),
        [
            {
                "gateway_id": gateway,
                "applied_revision": report.applied,
                "reported_at": change.at,
                "detail": json.dumps(report.detail),
            }
            for gateway, (_, report) in sorted(taken.items())
        ],
    )
    # Revisions a gateway has caught up with no longer measure a lag.  The
    # current one stays, so a gateway that falls behind again (an agent
    # restored from an older state) still has a time to measure from.
    # Gateways reporting the same (applied, revision) share one IN.
    r = t.revisions
    groups: dict[tuple[int, int], list[int]] = {}
    for gateway, (row, report) in taken.items():
        groups.setdefault((report.applied, int(row.revision)), []).append(gateway)
    connection.execute(
        sa.delete(r).where(
            sa.or_(
                *(
                    sa.and_(t.among(r.c.gateway_id, g), r.c.seq <= applied, r.c.seq < revision)
                    for (applied, revision), g in groups.items()
                )
            )
        )
    )
    _forget_applied_scope_revisions(connection, {row.scope_id for row, _ in taken.values()})
    for gateway, (_, report) in sorted(taken.items()):
        if report.offenders is not None:
            offenders.replace(change, gateway, report.offenders)
