"""Quarantines and exemptions: who is held, why, by whom, until when."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.compile import (
    Catalogue,
    Topology,
    guard,
    hex_of,
)
from edgectl.controller.errors import Conflict, Invalid, NotFound
from edgectl.controller.store import history, loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store
from edgectl.controller.store.subscribers import (
    ensure_accounts,
    session_addresses,
)
from edgectl.model import MODE_POLICY, PoolKind, Prefix, QuarantineMode

EXPIRY_ACTOR = "system:expiry"


@dataclass(frozen=True, slots=True)
class QuarantineSpec:
    mode: QuarantineMode
    reason: str
    account: str | None = None
    prefix: Prefix | None = None
    ticket: str | None = None
    expires: datetime | None = None
    # Instead of ``account``: the account that held ``address`` at ``at``
    # (None: now), resolved from the session history in the hold's transaction.
    address: Prefix | None = None
    at: datetime | None = None
    # The operator's category, for the portal's text and the grace period.
    category: str | None = None
    # May the subscriber lift it from the notice portal?  None: the mode's
    # default (MODE_POLICY); True for a mode that never allows it is refused.
    self_release: bool | None = None
    # Hold even within the grace period a self-release started.
    ignore_grace: bool = False

    def grace_key(self) -> str:
        """What "the same reason" means for the grace period after a self-release."""
        return f"category:{self.category}" if self.category else f"reason:{self.reason}"

    def effective_self_release(self) -> bool:
        allowed = MODE_POLICY[self.mode].self_release
        if self.self_release and not allowed:
            raise Invalid("self_release", f"a {self.mode} hold is never released by the subscriber")
        return allowed if self.self_release is None else self.self_release


# How far ahead of the controller's clock ``at`` may be: clocks of the
# analyst's tools and the NAS differ a little, a date tomorrow is a mistake.
AT_SKEW = timedelta(minutes=5)


def _resolve(change: Change, spec: QuarantineSpec) -> tuple[QuarantineSpec, dict[str, Any]]:
    """``spec`` with the account that held its address then, and how that was found."""
    assert spec.address is not None
    when = change.at if spec.at is None else spec.at
    if when > change.at + AT_SKEW:
        raise Invalid("at", f"{when.isoformat()} lies in the future")
    found = history.holder_at(change.connection, spec.address, when, "address")
    if found is None:
        raise Invalid("address", f"nobody held {spec.address} at {when.isoformat()}")
    resolved = {
        "address": str(spec.address),
        "at": when.isoformat(),
        "account": found["account"],
        "held": found["address"],
        "started": found["started"],
        "ended": found["ended"],
        "source": found["source"],
        "session_id": found["session_id"],
    }
    return replace(spec, account=found["account"]), resolved


@dataclass(frozen=True, slots=True)
class ExemptionSpec:
    account: str
    ticket: str
    reason: str
    expires: datetime | None = None


def _state(row: Any) -> str:
    if row.active:
        return "active"
    return "expired" if row.ended_by == EXPIRY_ACTOR else "lifted"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def self_release_of(row: Any) -> bool:
    """The hold's own flag, or (holds from before it existed) its mode's default."""
    if row.self_release is not None:
        return bool(row.self_release)
    return MODE_POLICY[QuarantineMode(row.mode)].self_release


def quarantine_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "account": row.ref,
        "prefix": row.prefix,
        "mode": row.mode,
        "reason": row.reason,
        "ticket": row.ticket,
        "actor": row.actor,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "expires_at": _iso(row.expires_at),
        "state": _state(row),
        "ended_at": _iso(row.ended_at),
        "ended_by": row.ended_by,
        "end_reason": row.end_reason,
        "category": row.category,
        "self_release": self_release_of(row),
    }


def exemption_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "account": row.ref,
        "ticket": row.ticket,
        "reason": row.reason,
        "actor": row.actor,
        "created_at": _iso(row.created_at),
        "expires_at": _iso(row.expires_at),
        "state": _state(row),
        "ended_at": _iso(row.ended_at),
        "ended_by": row.ended_by,
        "end_reason": row.end_reason,
    }


def select_hold(table: sa.Table) -> sa.Select[Any]:
    return sa.select(table, t.accounts.c.ref).select_from(
        table.outerjoin(t.accounts, t.accounts.c.id == table.c.account_id)
    )


def _one(connection: Connection, table: sa.Table, ident: int, what: str) -> Any:
    row = connection.execute(select_hold(table).where(table.c.id == ident)).first()
    if row is None:
        raise NotFound(f"no {what} {ident}")
    return row


def check_expiry(change: Change, expires: datetime | None) -> None:
    if expires is not None and expires <= change.at:
        raise Invalid("expires", "lies in the past")


def _refuse(problems: Iterable[Any], field: str) -> None:
    for problem in problems:
        raise Invalid(field, problem.reason)


def _prefix_target(topology: Topology, catalogue: Catalogue, spec: QuarantineSpec) -> None:
    """A bare-prefix hold must be one subscriber key inside subscriber space."""
    assert spec.prefix is not None
    prefix = spec.prefix
    _refuse(guard(catalogue, quarantines=[(prefix, spec.mode)]), "prefix")
    if prefix.version == 4 and not prefix.is_host:
        raise Invalid("prefix", "an IPv4 subscriber is one address: give a /32")
    placements = topology.placements(prefix)
    if not placements:
        for placed in topology.pools:
            if placed.pool.kind is not PoolKind.INFRASTRUCTURE and any(
                p.contains(prefix) for p in placed.pool.prefixes
            ):
                raise Invalid(
                    "prefix",
                    f"{prefix} spans several subscribers of pool {placed.pool.name} "
                    f"(it delegates /{placed.pool.subscriber_prefix_len})",
                )
        raise Invalid("prefix", f"{prefix} lies in no subscriber pool: no gateway would hold it")


def check_placement(
    change: Change,
    topology: Topology,
    catalogue: Catalogue,
    spec: QuarantineSpec,
    addresses: list[Prefix],
) -> None:
    field = "account" if spec.account is not None else "prefix"
    keys = topology.keys(addresses)
    _refuse(guard(catalogue, quarantines=[(k, spec.mode) for k in keys]), field)
    policy = MODE_POLICY[spec.mode]
    if not policy.needs_garden:
        return
    gateways = {
        g for a in addresses for placed, _ in topology.placements(a) for g in placed.gateways
    }
    if not gateways:
        return
    rows = change.connection.execute(
        sa.select(t.gateways.c.name, t.gateways.c.settings).where(
            t.gateways.c.id.in_(sorted(gateways))
        )
    )
    for name, settings in rows:
        if not loaders.settings_of(settings).garden_ready:
            raise Invalid(
                "mode",
                f"gateway {name} has no resolvers and portal configured; "
                f"{spec.mode} there would be the same as {policy.fallback}",
            )


def hold_values(spec: QuarantineSpec, actor: str, change: Change) -> dict[str, Any]:
    """The columns a quarantine request sets, on create and on update alike."""
    return {
        "mode": spec.mode.value,
        "reason": spec.reason,
        "ticket": spec.ticket,
        "actor": actor,
        "updated_at": change.at,
        "expires_at": spec.expires,
        "category": spec.category,
        "self_release": spec.effective_self_release(),
    }


def check_grace(change: Change, accounts: dict[str, int], spec: QuarantineSpec) -> None:
    """Refuse a hold for the reason an account self-released from within its grace period.

    PacketFence's rule: a subscriber who cleaned up is not held again by the
    same detection before the grace period ends (the bot may take a while to
    stop showing up in feeds).  Staff who know better pass ``ignore_grace``.
    """
    if spec.ignore_grace or not accounts:
        return
    n = t.portal_notices
    by_id = {ident: ref for ref, ident in accounts.items()}
    rows = loaders.rows_in(
        change.connection,
        sa.select(n.c.account_id, n.c.grace_until).where(
            n.c.kind == "released", n.c.grace_key == spec.grace_key(), n.c.grace_until > change.at
        ),
        n.c.account_id,
        sorted(by_id),
    )
    for row in rows:
        raise Conflict(
            f"account {by_id[row.account_id]!r} released itself from a hold for the same "
            f"{'category' if spec.category else 'reason'}; grace period until "
            f"{row.grace_until.isoformat()} (ignore_grace overrides)"
        )


def quarantine(store: Store, actor: str, spec: QuarantineSpec) -> tuple[dict[str, Any], bool]:
    """Hold an account or prefix; an existing active hold is updated. Returns (hold, created)."""
    hold, created, _ = quarantine_resolved(store, actor, spec)
    return hold, created


def quarantine_resolved(
    store: Store, actor: str, spec: QuarantineSpec
) -> tuple[dict[str, Any], bool, dict[str, Any] | None]:
    """``quarantine``, and for an ``address`` how it was resolved to an account."""
    q = t.quarantines
    resolved = None
    with store.write(actor) as change:
        check_expiry(change, spec.expires)
        connection = change.connection
        if spec.address is not None:
            spec, resolved = _resolve(change, spec)
        catalogue, topology = loaders.view(change)
        if spec.account is not None:
            account: int | None = ensure_accounts(change, [spec.account])[spec.account]
            assert account is not None
            check_grace(change, {spec.account: account}, spec)
            addresses = session_addresses(connection, account)
            match = q.c.account_id == account
        else:
            assert spec.prefix is not None
            _prefix_target(topology, catalogue, spec)
            account = None
            addresses = [spec.prefix]
            match = q.c.prefix == str(spec.prefix)
        check_placement(change, topology, catalogue, spec, addresses)
        existing = connection.execute(select_hold(q).where(match, t.active(q))).first()
        values = hold_values(spec, actor, change)
        if existing is None:
            ident = connection.execute(
                sa.insert(q)
                .values(
                    account_id=account,
                    prefix=None if spec.prefix is None else str(spec.prefix),
                    prefix_hex=None if spec.prefix is None else hex_of(spec.prefix),
                    created_at=change.at,
                    active=True,
                    **values,
                )
                .returning(q.c.id)
            ).scalar_one()
            before = None
        else:
            ident = existing.id
            connection.execute(sa.update(q).where(q.c.id == ident).values(**values))
            before = quarantine_public(existing)
        after = quarantine_public(_one(connection, q, ident, "quarantine"))
        change.addresses.update(addresses)
        action = "quarantine.create" if existing is None else "quarantine.update"
        # The audit says how an address became this account: the evidence a
        # dispute about the attribution starts from.
        record = after if resolved is None else {**after, "resolved": resolved}
        change.audit(action, "quarantine", str(ident), before, record, spec.reason)
    return after, existing is None, resolved


def _addresses_of(connection: Connection, row: Any) -> list[Prefix]:
    if row.account_id is not None:
        return session_addresses(connection, row.account_id)
    return [Prefix.parse(row.prefix)] if getattr(row, "prefix", None) else []


def end_hold(change: Change, table: sa.Table, row: Any, reason: str, what: str) -> dict[str, Any]:
    connection = change.connection
    connection.execute(
        sa.update(table)
        .where(table.c.id == row.id)
        .values(active=False, ended_at=change.at, ended_by=change.actor, end_reason=reason)
    )
    change.addresses.update(_addresses_of(connection, row))
    after = _one(connection, table, row.id, what)
    public = quarantine_public if table is t.quarantines else exemption_public
    before_data, after_data = public(row), public(after)
    verb = "expire" if change.actor == EXPIRY_ACTOR else "lift"
    change.audit(f"{what}.{verb}", what, str(row.id), before_data, after_data, reason)
    return after_data


def lift(store: Store, actor: str, table_name: str, ident: int, reason: str) -> dict[str, Any]:
    table = t.quarantines if table_name == "quarantine" else t.exemptions
    with store.write(actor) as change:
        row = _one(change.connection, table, ident, table_name)
        if not row.active:
            raise Conflict(f"{table_name} {ident} is already {_state(row)}")
        return end_hold(change, table, row, reason, table_name)


def exempt(store: Store, actor: str, spec: ExemptionSpec) -> dict[str, Any]:
    e = t.exemptions
    with store.write(actor) as change:
        check_expiry(change, spec.expires)
        connection = change.connection
        account = ensure_accounts(change, [spec.account])[spec.account]
        existing = connection.execute(
            sa.select(e.c.id).where(e.c.account_id == account, e.c.active)
        ).first()
        if existing is not None:
            raise Conflict(
                f"account {spec.account!r} already has active exemption {existing.id}; "
                "lift it first"
            )
        addresses = session_addresses(connection, account)
        catalogue, topology = loaders.view(change)
        _refuse(guard(catalogue, exemptions=topology.keys(addresses)), "account")
        ident = connection.execute(
            sa.insert(e)
            .values(
                account_id=account,
                ticket=spec.ticket,
                reason=spec.reason,
                actor=actor,
                created_at=change.at,
                expires_at=spec.expires,
                active=True,
            )
            .returning(e.c.id)
        ).scalar_one()
        after = exemption_public(_one(connection, e, ident, "exemption"))
        change.addresses.update(addresses)
        change.audit("exemption.create", "exemption", str(ident), None, after, spec.reason)
    return after


def get(store: Store, table_name: str, ident: int) -> dict[str, Any]:
    table = t.quarantines if table_name == "quarantine" else t.exemptions
    public = quarantine_public if table_name == "quarantine" else exemption_public
    with store.read() as connection:
        return public(_one(connection, table, ident, table_name))


@dataclass(frozen=True, slots=True)
class HoldFilter:
    state: str = "active"  # active / expired / lifted / ended / all
    account: str | None = None
    ticket: str | None = None
    prefix: Prefix | None = None
    limit: int = 100
    offset: int = 0
    mode: str | None = None  # quarantines only
    actor: str | None = None


def _where(query: sa.Select[Any], table: sa.Table, wanted: HoldFilter) -> sa.Select[Any]:
    if wanted.state == "active":
        query = query.where(table.c.active)
    elif wanted.state == "ended":
        query = query.where(sa.not_(table.c.active))
    elif wanted.state == "expired":
        query = query.where(sa.not_(table.c.active), table.c.ended_by == EXPIRY_ACTOR)
    elif wanted.state == "lifted":
        query = query.where(sa.not_(table.c.active), table.c.ended_by != EXPIRY_ACTOR)
    if wanted.account is not None:
        query = query.where(t.accounts.c.ref == wanted.account)
    if wanted.ticket is not None:
        query = query.where(table.c.ticket == wanted.ticket)
    if wanted.prefix is not None and table is t.quarantines:
        query = query.where(table.c.prefix == str(wanted.prefix))
    if wanted.mode is not None and table is t.quarantines:
        query = query.where(table.c.mode == wanted.mode)
    if wanted.actor is not None:
        query = query.where(table.c.actor == wanted.actor)
    return query


def _filtered(table: sa.Table, wanted: HoldFilter) -> sa.Select[Any]:
    query = _where(select_hold(table), table, wanted)
    return query.order_by(table.c.id.desc()).limit(wanted.limit).offset(wanted.offset)


@dataclass(frozen=True, slots=True)
class _Facet:
    mode: str
    actor: str
    state: str
    n: int


def _state_of(active: bool, ended_by: str | None) -> str:
    if active:
        return "active"
    return "expired" if ended_by == EXPIRY_ACTOR else "lifted"


def _state_matches(wanted: str, state: str) -> bool:
    if wanted == "all":
        return True
    if wanted == "ended":
        return state != "active"
    return wanted == state


def quarantine_counts(store: Store, wanted: HoldFilter, top: int = 20) -> dict[str, Any]:
    """How many quarantines match ``wanted``, and per value of each filter (state,
    mode, actor, ticket) with that filter left out: what choosing it would give.

    Two scans, not one per filter: (state, mode, actor) are few together (three
    states, three modes, the desk's staff and policies), so one GROUP BY over
    them answers those three and the total, and the rest is summed here.
    Tickets are often one per hold: their own query, ``top`` most frequent only;
    actors are cut to ``top`` too.
    """
    q = t.quarantines
    # The join to accounts only when filtering by account: a scan of 100k
    # holds should not pay for a join it does not need.
    source = q.outerjoin(t.accounts) if wanted.account is not None else q
    common = replace(wanted, state="all", mode=None, actor=None)
    # Raw columns, not the state's CASE: grouped in ix_quarantine_facets' order,
    # SQLite streams the covering index with no temporary B-tree.
    facets = (q.c.mode, q.c.actor, q.c.active, q.c.ended_by)
    grouped = _where(
        sa.select(*facets, sa.func.count().label("n")).select_from(source), q, common
    ).group_by(*facets)
    tickets = (
        _where(
            sa.select(q.c.ticket, sa.func.count().label("n")).select_from(source),
            q,
            replace(wanted, ticket=None),
        )
        .where(q.c.ticket.is_not(None))
        .group_by(q.c.ticket)
        .order_by(sa.func.count().desc(), q.c.ticket)
        .limit(top)
    )
    with store.read() as connection:
        groups = [
            _Facet(r.mode, r.actor, _state_of(r.active, r.ended_by), int(r.n))
            for r in connection.execute(grouped)
        ]
        ticket_counts = {row.ticket: int(row.n) for row in connection.execute(tickets)}

    def keep(row: Any, *, state: bool = True, mode: bool = True, actor: bool = True) -> bool:
        return (
            (not state or _state_matches(wanted.state, row.state))
            and (not mode or wanted.mode is None or row.mode == wanted.mode)
            and (not actor or wanted.actor is None or row.actor == wanted.actor)
        )

    def tally(rows: Iterable[Any], key: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in rows:
            found[getattr(row, key)] = found.get(getattr(row, key), 0) + int(row.n)
        return found

    states = tally((r for r in groups if keep(r, state=False)), "state")
    states["ended"] = states.get("expired", 0) + states.get("lifted", 0)
    states["all"] = states["ended"] + states.get("active", 0)
    actors = tally((r for r in groups if keep(r, actor=False)), "actor")
    return {
        "total": sum(int(r.n) for r in groups if keep(r)),
        "state": states,
        "mode": tally((r for r in groups if keep(r, mode=False)), "mode"),
        "actor": dict(sorted(actors.items(), key=lambda item: (-item[1], item[0]))[:top]),
        "ticket": ticket_counts,
    }


def listing(store: Store, table_name: str, wanted: HoldFilter) -> list[dict[str, Any]]:
    table = t.quarantines if table_name == "quarantine" else t.exemptions
    public = quarantine_public if table_name == "quarantine" else exemption_public
    with store.read() as connection:
        return [public(row) for row in connection.execute(_filtered(table, wanted))]
