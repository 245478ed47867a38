"""A small world for the accounting feed's tests, and the store state they compare."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from edgectl.controller.store import Store, gateways, holds
from edgectl.controller.store import schema as t
from edgectl.controller.store.catalog import create_pool
from edgectl.controller.store.feed import AccountingEvent
from edgectl.model import GatewaySettings, Pool, PoolKind, Prefix, QuarantineMode

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
ACTOR = "feed-test"


def world(store: Store) -> int:
    """One dynamic dual-stack pool (IPv6 delegated /56) served by gateway gw."""
    pool = Pool(
        "dyn",
        PoolKind.DYNAMIC,
        (Prefix.parse("100.64.0.0/16"), Prefix.parse("2001:db8:a000::/36")),
        subscriber_prefix_len=56,
    )
    create_pool(store, ACTOR, pool)
    gateways.create_gateway(store, ACTOR, gateways.GatewaySpec("gw", GatewaySettings(), ("dyn",)))
    return gateways.gateway_id(store, "gw")


def quarantine(store: Store, account: str, mode: QuarantineMode = QuarantineMode.SMTP) -> None:
    holds.quarantine(store, ACTOR, holds.QuarantineSpec(mode, "spam", account=account))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def v4(last: int) -> Prefix:
    return Prefix.parse(f"100.64.0.{last}/32")


def v6(index: int) -> Prefix:
    return Prefix.parse(f"2001:db8:a000:{index:x}00::/56")


def event(
    kind: str,
    minute: float,
    session: str | None = None,
    account: str | None = None,
    *,
    source: str = "nas1",
    ipv4: Prefix | None = None,
    ipv6: Prefix | None = None,
    session_time: int | None = None,
) -> AccountingEvent:
    return AccountingEvent(
        source,
        kind,  # type: ignore[arg-type]
        at(minute),
        session,
        account,
        ipv4,
        ipv6,
        session_time,
    )


def bindings(store: Store) -> dict[str, tuple[str | None, str | None]]:
    """What ``sessions`` binds now, by account (accounts with no address left out)."""
    s = t.sessions
    query = sa.select(t.accounts.c.ref, s.c.ipv4, s.c.ipv6).join(
        t.accounts, t.accounts.c.id == s.c.account_id
    )
    with store.read() as connection:
        return {
            ref: (ipv4, ipv6)
            for ref, ipv4, ipv6 in connection.execute(query)
            if ipv4 is not None or ipv6 is not None
        }


def held_keys(store: Store) -> dict[str, str]:
    """Live compiled entries: key -> payload (what the gateway enforces)."""
    e = t.entries
    with store.read() as connection:
        return dict(connection.execute(sa.select(e.c.key, e.c.payload).where(e.c.live)).all())


def history_rows(store: Store) -> list[tuple[Any, ...]]:
    h = t.session_history
    query = sa.select(
        t.accounts.c.ref,
        h.c.source,
        h.c.session_id,
        h.c.ipv4,
        h.c.ipv6,
        h.c.ipv4_seen,
        h.c.ipv6_seen,
        h.c.started,
        h.c.last_seen,
        h.c.stopped,
        h.c.ended,
    ).join(t.accounts, t.accounts.c.id == h.c.account_id)
    with store.read() as connection:
        return sorted(tuple(row) for row in connection.execute(query))


def state(store: Store) -> tuple[Any, ...]:
    """Everything the feed writes that does not name a sequence number or a row id."""
    with store.read() as connection:
        restarts = sorted(connection.execute(sa.select(t.nas_restarts)).all())
    return (history_rows(store), bindings(store), held_keys(store), restarts)


def reset(store: Store) -> None:
    """Forget every session, account and hold (the catalogue stays)."""
    with store.database.write() as connection:
        for table in (
            t.session_history,
            t.nas_restarts,
            t.sessions,
            t.quarantines,
            t.exemptions,
            t.entries,
            t.revisions,
            t.accounts,
        ):
            connection.execute(sa.delete(table))
