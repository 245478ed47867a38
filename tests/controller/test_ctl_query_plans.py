"""The write path and the agents' reads use indexes on both stores.

Every statement that quarantine create/update/lift, exemption create/lift,
session upserts (one and bulk), the accounting feed, the session-history
lookups, the desired-state reads, the agents' status reports and the sweeper
run is explained (see ctl_plans): none may scan a table that grows with
subscribers, holds or history, or a create would cost more with every hold
stored (issue 10: 14 ms at 10k held, 39 ms at 100k, from one such scan).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ctl_plans import recorded, scans

from edgectl.controller.store import (
    Store,
    accounts,
    bulk_holds,
    desired,
    gateways,
    history,
    holds,
    portal,
    sweep,
)
from edgectl.controller.store.catalog import create_pool
from edgectl.controller.store.feed import (
    AccountingEvent,
    apply_events,
    open_sessions_by_source,
    unbind_stale,
)
from edgectl.controller.store.subscribers import Binding, bind_many, start_session, stop_session
from edgectl.model import GatewaySettings, Pool, PoolKind, Prefix, QuarantineMode

ACTOR = "plans"


def _binding(index: int, *, shift: int = 0) -> Binding:
    return Binding(
        f"acct{index}",
        Prefix.parse(f"100.64.{(index + shift) // 250}.{(index + shift) % 250 + 1}/32"),
        Prefix.parse(f"2001:db8:a{index + shift:03x}:100::/56"),
    )


def _world(store: Store) -> int:
    """One dynamic dual-stack pool on gateway gw, 40 sessions, 20 of them held."""
    pool = Pool(
        "dyn",
        PoolKind.DYNAMIC,
        (Prefix.parse("100.64.0.0/16"), Prefix.parse("2001:db8:a000::/36")),
        subscriber_prefix_len=56,
    )
    create_pool(store, ACTOR, pool)
    spec = gateways.GatewaySpec("gw", GatewaySettings(), ("dyn",))
    gateways.create_gateway(store, ACTOR, spec)
    bind_many(store, ACTOR, [_binding(i) for i in range(40)])
    batch = holds.QuarantineSpec(QuarantineMode.SMTP, "seed", account="batch")
    bulk_holds.quarantine_accounts(store, ACTOR, [f"acct{i}" for i in range(20)], batch)
    return gateways.gateway_id(store, "gw")


def _hot_path(store: Store, gateway: int) -> None:
    """One of each write the issue names, then what agents and the sweeper read."""
    since = desired.revision(store, gateway)
    smtp = holds.QuarantineSpec(QuarantineMode.SMTP, "spam", account="acct30", ticket="T-1")
    created, _ = holds.quarantine(store, ACTOR, smtp)
    block = holds.QuarantineSpec(QuarantineMode.BLOCK, "worse", account="acct30", ticket="T-2")
    holds.quarantine(store, ACTOR, block)  # the update path
    bare = holds.QuarantineSpec(QuarantineMode.SMTP, "unassigned", prefix=_binding(90).ipv4)
    prefix_hold, _ = holds.quarantine(store, ACTOR, bare)
    holds.lift(store, ACTOR, "quarantine", created["id"], "cleaned")
    exemption = holds.exempt(store, ACTOR, holds.ExemptionSpec("acct31", "T-3", "relay"))
    holds.lift(store, ACTOR, "exemption", exemption["id"], "done")
    start_session(store, ACTOR, _binding(1, shift=100))  # a held account moves
    start_session(store, ACTOR, _binding(35, shift=100))  # an unheld one
    # A bulk batch: held and unheld accounts move, one takes another's address.
    moved = [_binding(i, shift=200) for i in (2, 3, 36)]
    bind_many(store, ACTOR, [*moved, Binding("acct37", _binding(4).ipv4)])
    stop_session(store, ACTOR, "acct5")
    holds.lift(store, ACTOR, "quarantine", prefix_hold["id"], "done")
    desired.serve(store, gateway, None)
    desired.serve(store, gateway, since)
    desired.serve_many(store, [(gateway, since, None), (gateway, None, None)])
    desired.revisions(store)
    # What each agent does after every apply: report, and read itself back.
    gateways.report_status(store, "agent", "gw", desired.revision(store, gateway), {"ok": True})
    sweep.expire(store)
    sweep.purge_tombstones(store, 0.0)
    sweep.forget_revisions(store, 0.0)


def _scans_of(store: Store, action: Callable[[], object]) -> dict[str, list[str]]:
    with recorded(store) as statements:
        action()
    assert statements, "nothing was recorded: the check would pass vacuously"
    return scans(store, statements)


def test_the_hot_path_scans_no_big_table(store: Store) -> None:
    gateway = _world(store)
    found = _scans_of(store, lambda: _hot_path(store, gateway))
    assert not found, "\n\n".join(f"{sql}\n  -> {verdict}" for sql, verdict in found.items())


def _feed_path(store: Store) -> None:
    """The accounting feed's writes, its housekeeping and the history lookups."""
    base = datetime(2026, 3, 1, tzinfo=UTC)

    def event(kind: str, minute: int, index: int | None = None, **fields: Any) -> AccountingEvent:
        session = None if index is None else f"sess{index}"
        account = None if index is None else f"acct{index}"
        when = base + timedelta(minutes=minute)
        return AccountingEvent("nas1", kind, when, session, account, **fields)  # type: ignore[arg-type]

    moved = _binding(2, shift=300)
    apply_events(
        store,
        [
            event("start", 0, 1, ipv4=_binding(1).ipv4, ipv6=_binding(1).ipv6),  # held, moves
            event("start", 0, 36, ipv4=_binding(36, shift=300).ipv4),  # unheld
            event("interim", 5, 2, ipv4=moved.ipv4, ipv6=moved.ipv6, session_time=300),
            event("stop", 9, 3, ipv4=_binding(3).ipv4, session_time=60),
            event("start", 1, 37, ipv4=_binding(4).ipv4),  # takes acct4's address
        ],
    )
    apply_events(store, [event("stop", 10, 1, ipv4=_binding(1).ipv4), event("on", 8)])
    unbind_stale(store, timedelta(minutes=1), now=base + timedelta(days=1))
    sweep.purge_history(store, 1)
    with store.read() as connection:
        for address in (_binding(36, shift=300).ipv4, Prefix.parse("2001:db8:a001::1/128")):
            assert address is not None
            history.holder_at(connection, address, base + timedelta(minutes=3))
        history.account_intervals(connection, 1)
    accounts.holder_at(store, Prefix.parse("100.64.0.2/32"), base)
    assert open_sessions_by_source(store)  # the per-NAS gauge, read at every scrape


def test_the_feed_and_the_history_lookups_scan_no_big_table(store: Store) -> None:
    """Issue 11: an ``at`` lookup over 10M intervals and a 50,000-Start batch stay index
    range reads whatever the history holds (400 days of it)."""
    _world(store)
    found = _scans_of(store, lambda: _feed_path(store))
    assert not found, "\n\n".join(f"{sql}\n  -> {verdict}" for sql, verdict in found.items())


def test_the_portal_notice_path_scans_no_big_table(store: Store) -> None:
    """Issue 13: a botnet takedown's notices, acknowledgements and releases stay
    index reads however long the notice log grows; a hold's acknowledgement is
    found by (hold, kind), not by reading every notice the hold was shown."""
    create_pool(store, ACTOR, Pool("dyn", PoolKind.DYNAMIC, (Prefix.parse("100.64.0.0/16"),)))
    garden = GatewaySettings(
        resolvers=(Prefix.parse("192.0.2.53"),), portal=(Prefix.parse("192.0.2.80"),)
    )
    gateways.create_gateway(store, ACTOR, gateways.GatewaySpec("gw", garden, ("dyn",)))
    bind_many(store, ACTOR, [_binding(i) for i in range(40)])
    spec = holds.QuarantineSpec(QuarantineMode.WALLED_GARDEN, "bot", category="botnet")
    bulk_holds.quarantine_accounts(store, ACTOR, [f"acct{i}" for i in range(20)], spec)
    static = Prefix.parse("100.64.200.1")  # a hold on an address, no account
    on_address = holds.QuarantineSpec(QuarantineMode.WALLED_GARDEN, "bot", prefix=static)
    holds.quarantine(store, ACTOR, on_address)
    limits = portal.Limits()
    v4 = [_binding(i).ipv4 for i in range(30)] + [static]
    v6 = Prefix.parse("2001:db8:a001:100::1/128")
    shown = [portal.Shown(address) for address in [*v4, v6] if address is not None]

    def notices() -> None:
        answers = portal.record_shown(store, shown, limits)
        first = answers[0]
        assert isinstance(first, dict) and first["code"]
        address = _binding(0).ipv4
        assert address is not None
        ident = first["hold"]["id"]
        portal.acknowledge(store, ident, address, first["code"], False, limits)
        portal.record_shown(store, shown, limits)  # reminders for acct0
        portal.hold_for(store, address, limits)
        code = portal.record_shown(store, [portal.Shown(address, full=True)], limits)[0]
        assert isinstance(code, dict)
        portal.acknowledge(store, ident, address, code["code"], True, limits)

    with recorded(store) as statements:
        notices()
    found = scans(store, statements)
    assert not found, "\n\n".join(f"{sql}\n  -> {verdict}" for sql, verdict in found.items())
    if store.database.engine.dialect.name == "sqlite":
        sql = next(sql for sql, _ in statements if "max(portal_notices.at)" in sql)
        with store.read() as connection:
            plan = " ".join(
                str(row[-1])
                for row in connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + sql, next(p for s, p in statements if s == sql)
                )
            )
        assert "ix_portal_notices_hold (quarantine_id=? AND kind=?)" in plan, plan


def test_the_check_sees_a_scan(store: Store) -> None:
    """A statement no index serves is reported, on each store."""

    def unindexed() -> None:
        with store.read() as connection:
            connection.exec_driver_sql("SELECT key FROM scope_entries WHERE payload = 'x'")

    found = _scans_of(store, unindexed)
    assert list(found.values()) and "scope_entries" in " ".join(next(iter(found.values())))


def test_before_0003_a_create_scanned_the_entries(store: Store) -> None:
    """What 0003's index is for: without it the recompile reads every entry.

    The 0002 index is put back by hand rather than by downgrading to 0002:
    today's code queries tables and columns later migrations (0004, 0007)
    add, so it cannot run on a 0002 schema.
    """
    _world(store)
    with store.database.engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX ix_scope_entries_by_key")
        connection.exec_driver_sql("CREATE INDEX ix_scope_entries_key ON scope_entries (kind, key)")
    spec = holds.QuarantineSpec(QuarantineMode.SMTP, "spam", account="acct30")
    found = _scans_of(store, lambda: holds.quarantine(store, ACTOR, spec))
    assert any("scope_entries" in " ".join(verdict) for verdict in found.values()), found
    with store.database.engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX ix_scope_entries_key")
        connection.exec_driver_sql("CREATE INDEX ix_scope_entries_by_key ON scope_entries (key)")
    spec = holds.QuarantineSpec(QuarantineMode.SMTP, "spam", account="acct31")
    assert _scans_of(store, lambda: holds.quarantine(store, ACTOR, spec)) == {}
