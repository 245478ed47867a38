"""The accounting feed's event semantics (store/feed.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
from feed_support import (
    at,
    bindings,
    event,
    held_keys,
    history_rows,
    quarantine,
    v4,
    v6,
    world,
)

from edgectl.controller.store import Store, audit, subscribers
from edgectl.controller.store import schema as t
from edgectl.controller.store.feed import (
    AccountingEvent,
    apply_events,
    open_sessions_by_source,
    unbind_stale,
)
from edgectl.controller.store.history import holder_at
from edgectl.model import Prefix


def _statuses(outcomes: list) -> list[str]:  # type: ignore[type-arg]
    return [o.status for o in outcomes]


def _holder(store: Store, address: str, minute: float) -> str | None:
    with store.read() as connection:
        found = holder_at(connection, Prefix.parse(address), at(minute))
    return None if found is None else found["account"]


def test_a_start_binds_and_a_quarantined_accounts_key_follows(store: Store) -> None:
    world(store)
    quarantine(store, "cust-1")  # quarantined before it ever logged in
    assert held_keys(store) == {}
    outcomes = apply_events(store, [event("start", 0, "s1", "cust-1", ipv4=v4(7), ipv6=v6(1))])
    assert _statuses(outcomes) == ["applied"]
    assert bindings(store) == {"cust-1": ("100.64.0.7", "2001:db8:a000:100::/56")}
    assert set(held_keys(store)) == {"100.64.0.7", "2001:db8:a000:100::/56"}
    # The Stop frees the address: the hold stays, waiting for the next one.
    assert _statuses(apply_events(store, [event("stop", 30, "s1", "cust-1", ipv4=v4(7))])) == [
        "applied"
    ]
    assert bindings(store) == {}
    assert held_keys(store) == {}
    # A new session at a new address: the key moves with it.
    apply_events(store, [event("start", 40, "s2", "cust-1", ipv4=v4(9))])
    assert set(held_keys(store)) == {"100.64.0.9"}


def test_an_interim_opens_a_session_whose_start_was_missed(store: Store) -> None:
    world(store)
    apply_events(store, [event("interim", 10, "s1", "cust-1", ipv4=v4(7), session_time=600)])
    assert bindings(store) == {"cust-1": ("100.64.0.7", None)}
    # Acct-Session-Time dates the start: it began ten minutes before the Interim.
    assert _holder(store, "100.64.0.7", 0) == "cust-1"
    assert _holder(store, "100.64.0.7", -0.01) is None


def test_an_interim_after_its_stop_never_reopens(store: Store) -> None:
    world(store)
    apply_events(store, [event("start", 0, "s1", "cust-1", ipv4=v4(7))])
    apply_events(store, [event("stop", 10, "s1", "cust-1", ipv4=v4(7))])
    late = apply_events(store, [event("interim", 20, "s1", "cust-1", ipv4=v4(7))])
    assert _statuses(late) == ["ignored"]
    assert bindings(store) == {}
    assert _holder(store, "100.64.0.7", 15) is None
    # And a retransmitted Start changes nothing either.
    assert _statuses(apply_events(store, [event("start", 0, "s1", "cust-1", ipv4=v4(7))])) == [
        "ignored"
    ]


def test_a_stop_without_a_start_records_a_closed_interval(store: Store) -> None:
    world(store)
    apply_events(store, [event("stop", 60, "s1", "cust-1", ipv4=v4(7), session_time=1800)])
    assert bindings(store) == {}
    assert _holder(store, "100.64.0.7", 30) == "cust-1"  # start inclusive
    assert _holder(store, "100.64.0.7", 59) == "cust-1"
    assert _holder(store, "100.64.0.7", 60) is None  # end exclusive
    assert _holder(store, "100.64.0.7", 29.99) is None


def test_accounting_on_ends_that_nas_sessions_begun_before_it(store: Store) -> None:
    world(store)
    apply_events(
        store,
        [
            event("start", 0, "a", "cust-a", ipv4=v4(1)),
            event("start", 0, "b", "cust-b", ipv4=v4(2), source="nas2"),
            event("start", 20, "c", "cust-c", ipv4=v4(3)),
        ],
    )
    outcomes = apply_events(store, [event("on", 10)])
    assert _statuses(outcomes) == ["applied"]
    # nas1's session begun before the restart ended; nas2's and the later one stay.
    assert bindings(store) == {"cust-b": ("100.64.0.2", None), "cust-c": ("100.64.0.3", None)}
    assert _holder(store, "100.64.0.1", 9) == "cust-a"
    assert _holder(store, "100.64.0.1", 10) is None
    # A Start dated before the restart that arrives after it ends there too.
    apply_events(store, [event("start", 5, "d", "cust-d", ipv4=v4(4))])
    assert "cust-d" not in bindings(store)
    assert _holder(store, "100.64.0.4", 7) == "cust-d"
    # A repeated Accounting-On is known already.
    assert _statuses(apply_events(store, [event("on", 10)])) == ["ignored"]
    assert open_sessions_by_source(store) == {"nas1": 1, "nas2": 1}


def test_an_address_taken_without_a_stop_moves_to_the_later_session(store: Store) -> None:
    world(store)
    quarantine(store, "cust-a")
    apply_events(store, [event("start", 0, "a", "cust-a", ipv4=v4(1))])
    assert set(held_keys(store)) == {"100.64.0.1"}
    apply_events(store, [event("start", 10, "b", "cust-b", ipv4=v4(1))])
    assert bindings(store) == {"cust-b": ("100.64.0.1", None)}
    assert held_keys(store) == {}  # cust-b is not held: the key went with cust-a's session
    assert _holder(store, "100.64.0.1", 5) == "cust-a"
    assert _holder(store, "100.64.0.1", 10) == "cust-b"


def test_unpooled_addresses_are_recorded_but_make_no_key(store: Store) -> None:
    world(store)
    quarantine(store, "cust-1")
    outside = Prefix.parse("198.18.0.5/32")
    outcomes = apply_events(store, [event("start", 0, "s1", "cust-1", ipv4=outside)])
    assert _statuses(outcomes) == ["unpooled"]
    assert "198.18.0.5" in outcomes[0].detail
    assert _holder(store, "198.18.0.5", 1) == "cust-1"
    assert held_keys(store) == {}


def test_invalid_events_are_refused_and_the_rest_commits(store: Store) -> None:
    world(store)
    naive = AccountingEvent("nas1", "start", at(0).replace(tzinfo=None), "s9", "c9", v4(9))
    outcomes = apply_events(
        store,
        [
            event("start", 0, "s1", "bad account!", ipv4=v4(1)),
            event("start", 0, "s2", "cust-2", ipv4=Prefix.parse("100.64.0.0/24")),
            event("start", 0, "s3", "cust-3", ipv6=Prefix.parse("2001:db8:a000::/48")),
            event("start", 0, None, "cust-4", ipv4=v4(4)),
            naive,
            AccountingEvent("nas1", "start", at(0).replace(year=1999), "s6", "c6", v4(6)),
            event("stop", 0, "s7", "cust-7", ipv4=v4(7), session_time=2**32),
            AccountingEvent("", "start", at(0), "s8", "c8", v4(8)),
            AccountingEvent("nas1", "restart", at(0), None, None),  # type: ignore[arg-type]
            event("start", 0, "s5", "cust-5", ipv4=v4(5)),
        ],
    )
    assert _statuses(outcomes) == ["invalid"] * 9 + ["applied"]
    assert "account" in outcomes[0].detail
    assert "ipv4" in outcomes[1].detail
    assert "spans several subscribers" in outcomes[2].detail
    assert "session_id" in outcomes[3].detail
    assert "time zone" in outcomes[4].detail
    assert "out of range" in outcomes[5].detail
    assert "session_time" in outcomes[6].detail
    assert "source" in outcomes[7].detail
    assert "kind" in outcomes[8].detail
    assert bindings(store) == {"cust-5": ("100.64.0.5", None)}
    records = audit.listing(store, audit.AuditFilter(action="session.feed"))
    assert len(records) == 1
    assert records[0]["after"]["invalid"] == 9 and records[0]["after"]["applied"] == 1


def test_one_batch_is_one_transaction_and_one_audit_record(store: Store) -> None:
    world(store)
    events = [event("start", 0, f"s{i}", f"cust-{i}", ipv4=v4(i + 1)) for i in range(50)]
    apply_events(store, events)
    records = audit.listing(store, audit.AuditFilter(action="session.feed"))
    assert len(records) == 1
    assert records[0]["after"]["applied"] == 50 and records[0]["after"]["bindings"] == 50
    assert len(bindings(store)) == 50


def test_stale_sessions_are_unbound_and_rest_bindings_never(store: Store) -> None:
    world(store)
    apply_events(
        store,
        [
            event("start", 0, "old", "cust-old", ipv4=v4(1)),
            event("start", 0, "live", "cust-live", ipv4=v4(2)),
            event("interim", 50, "live", "cust-live", ipv4=v4(2)),
        ],
    )
    subscribers.start_session(store, "token:ops", subscribers.Binding("cust-rest", v4(3)))
    assert unbind_stale(store, timedelta(minutes=30), now=at(60)) == 1
    assert set(bindings(store)) == {"cust-live", "cust-rest"}
    assert _holder(store, "100.64.0.1", 59) == "cust-old"
    assert _holder(store, "100.64.0.1", 60) is None
    assert unbind_stale(store, timedelta(minutes=30), now=at(60)) == 0


def test_ipv6_addresses_match_the_delegated_prefix_containing_them(store: Store) -> None:
    world(store)
    apply_events(store, [event("start", 0, "s1", "cust-1", ipv6=v6(1))])
    assert _holder(store, "2001:db8:a000:1ff::1", 1) == "cust-1"
    assert _holder(store, "2001:db8:a000:100::/64", 1) == "cust-1"
    assert _holder(store, "2001:db8:a000:200::1", 1) is None


def test_rest_bindings_are_intervals_too(store: Store) -> None:
    world(store)
    binding = subscribers.Binding("cust-1", v4(1), v6(1))
    subscribers.start_session(store, "token:ops", binding)
    subscribers.start_session(store, "token:ops", binding)  # the same again: one interval
    subscribers.bind_many(store, "token:ops", [subscribers.Binding("cust-1", v4(2))])
    subscribers.stop_session(store, "token:ops", "cust-1")
    rows = history_rows(store)
    assert [(r[1], r[3], r[4]) for r in rows] == [
        ("api:token:ops", "100.64.0.1", "2001:db8:a000:100::/56"),
        ("api:token:ops", "100.64.0.2", None),
    ]
    assert all(r[10] is not None for r in rows)  # both ended
    with store.read() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(t.session_history))
        assert count.scalar() == 2


def test_the_audit_counts_the_bindings_a_batch_moved(store: Store) -> None:
    world(store)
    apply_events(store, [event("start", 0, "s1", "cust-1", ipv4=v4(1))])
    entry = audit.listing(store, audit.AuditFilter())[-1]
    assert entry["actor"] == "feed" and entry["object_type"] == "sessions"
    assert json.loads(json.dumps(entry["after"]))["moved"] == 1
