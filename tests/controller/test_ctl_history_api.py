"""Session history over the API: who held an address at a time, quarantine by
address, an account's intervals, retention; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from ctl_support import Api, World, settings_for, wait_until_parked
from fastapi.testclient import TestClient
from feed_support import at, bindings, event, history_rows, v4, v6, world

from edgectl.controller.app import create_app
from edgectl.controller.store import Store, subscribers, sweep
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import now
from edgectl.controller.store.feed import apply_events
from edgectl.testing.wait import wait_until


def _feed(api: Api) -> None:
    """cust-1 on 100.64.0.7 from 03:00 to 03:30 (nas1), then cust-2 from 03:40 (nas2)."""
    apply_events(
        api.store,
        [
            event("start", 0, "s1", "cust-1", ipv4=v4(7), ipv6=v6(1)),
            event("stop", 30, "s1", "cust-1", ipv4=v4(7), ipv6=v6(1)),
            event("start", 40, "s2", "cust-2", ipv4=v4(7), source="nas2"),
        ],
    )


def _z(minute: float) -> str:
    """A time as the API's response models render it."""
    return at(minute).isoformat().replace("+00:00", "Z")


def _who(api: Api, address: str, minute: float, expect: int = 200) -> object:
    when = quote(at(minute).isoformat())
    return api.get(f"/v1/accounts?address={quote(address)}&at={when}", expect=expect)


def test_who_held_an_address_at_a_time(api: Api, world: World) -> None:
    _feed(api)
    [found] = _who(api, "100.64.0.7", 0)  # type: ignore[misc]
    assert found["account"] == "cust-1"
    assert found["session"] is None  # what cust-1 holds now: nothing
    interval = found["interval"]
    assert interval["address"] == "100.64.0.7"
    assert interval["source"] == "nas1" and interval["session_id"] == "s1"
    assert (interval["started"], interval["ended"]) == (_z(0), _z(30))
    # Start inclusive, end exclusive.
    assert _who(api, "100.64.0.7", 29.999)[0]["account"] == "cust-1"  # type: ignore[index]
    assert _who(api, "100.64.0.7", 30, expect=404) == {
        "detail": f"nobody held 100.64.0.7 at {at(30).isoformat()}"
    }
    _who(api, "100.64.0.7", -0.001, expect=404)
    later = _who(api, "100.64.0.7", 40)[0]  # type: ignore[index]
    assert later["account"] == "cust-2" and later["interval"]["ended"] is None
    assert later["session"]["ipv4"] == "100.64.0.7"
    # An IPv6 address matches the delegated prefix containing it.
    v6_found = _who(api, "2001:db8:a000:1ab::25", 10)[0]  # type: ignore[index]
    assert v6_found["account"] == "cust-1"
    assert v6_found["interval"]["address"] == "2001:db8:a000:100::/56"
    _who(api, "2001:db8:a000:200::1", 10, expect=404)


def test_without_at_it_is_who_holds_it_now(api: Api, world: World) -> None:
    api.put("/v1/accounts/cust-9/session", {"ipv4": "100.64.0.9"})
    [found] = api.get("/v1/accounts?address=100.64.0.9")
    assert found["account"] == "cust-9"
    assert found["interval"]["source"] == "api:token:test-netops"
    assert found["interval"]["ended"] is None
    assert api.get("/v1/accounts?address=100.64.0.10", expect=404)["detail"]


def test_bad_lookups_are_422_naming_the_field(api: Api, world: World) -> None:
    for query, field in (
        ("address=100.64.0.7&at=yesterday", "at"),
        ("address=100.64.0.7&at=2026-03-01T03:00:00", "at"),  # no time zone
        ("address=100.64.0.7&at=1772334000", "at"),  # not a Unix time either
        ("address=100.64.0.7&at=2026-13-01T03:00:00Z", "at"),
        ("address=not-an-ip&at=2026-03-01T03:00:00Z", "address"),
        ("address=100.64.0.0/24&at=2026-03-01T03:00:00Z", "address"),
        ("address=2001:db8::/16&at=2026-03-01T03:00:00Z", "address"),
    ):
        body = api.get(f"/v1/accounts?{query}", expect=422)
        assert body["detail"][0]["loc"] == ["query", field], (query, body)


def test_quarantine_by_address_resolves_the_account_and_audits_how(api: Api, world: World) -> None:
    _feed(api)
    body = {
        "address": "100.64.0.7",
        "at": at(10).isoformat(),
        "mode": "smtp",
        "reason": "spam at 03:10",
        "ticket": "AB-1",
    }
    created = api.post("/v1/quarantines", body, expect=201)
    assert created["quarantine"]["account"] == "cust-1"
    resolved = created["resolved"]
    assert resolved["account"] == "cust-1" and resolved["source"] == "nas1"
    assert (resolved["started"], resolved["ended"]) == (_z(0), _z(30))
    ident = created["quarantine"]["id"]
    [record] = api.get(f"/v1/audit?object_type=quarantine&object_id={ident}")
    assert record["after"]["resolved"] == {
        "address": "100.64.0.7",
        "at": at(10).isoformat(),
        "account": "cust-1",
        "held": "100.64.0.7",
        "started": at(0).isoformat(),
        "ended": at(30).isoformat(),
        "source": "nas1",
        "session_id": "s1",
    }
    # Without ``at``: whoever holds it now.
    now_body = {"address": "100.64.0.7", "mode": "block", "reason": "still spamming"}
    assert api.post("/v1/quarantines", now_body)["quarantine"]["account"] == "cust-2"


def test_quarantine_by_address_refusals(api: Api, world: World) -> None:
    _feed(api)
    base = {"mode": "smtp", "reason": "spam"}
    nobody = api.call(
        "POST",
        "/v1/quarantines",
        json={**base, "address": "100.64.0.7", "at": at(35).isoformat()},
        expect=422,
    ).json()
    assert nobody["detail"][0]["loc"] == ["body", "address"]
    assert "nobody held" in nobody["detail"][0]["msg"]
    future = (now() + timedelta(days=1)).isoformat()
    ahead = api.call(
        "POST", "/v1/quarantines", json={**base, "address": "100.64.0.7", "at": future}, expect=422
    ).json()
    assert ahead["detail"][0]["loc"] == ["body", "at"]
    for extra in (
        {"address": "100.64.0.7", "account": "cust-1"},
        {"address": "100.64.0.7", "prefix": "100.64.0.7"},
        {"account": "cust-1", "at": at(1).isoformat()},
        {},
    ):
        refused = api.call("POST", "/v1/quarantines", json={**base, **extra}, expect=422).json()
        assert "address" in refused["detail"][0]["msg"], extra
    bad = api.call(
        "POST", "/v1/quarantines", json={**base, "address": "100.64.0.0/24"}, expect=422
    ).json()
    assert bad["detail"][0]["loc"] == ["body", "address"]
    with api.store.read() as connection:
        assert connection.execute(sa.select(t.quarantines)).all() == []


def test_an_accounts_history_lists_its_sessions(api: Api, world: World) -> None:
    _feed(api)
    api.put("/v1/accounts/cust-1/session", {"ipv4": "100.64.0.8"})
    history = api.get("/v1/accounts/cust-1/history", role="viewer")
    sessions = history["sessions"]
    assert [(s["address"], s["source"]) for s in sessions] == [
        ("100.64.0.8", "api:token:test-netops"),
        ("100.64.0.7", "nas1"),
        ("2001:db8:a000:100::/56", "nas1"),
    ]
    assert sessions[0]["ended"] is None
    assert sessions[1]["ended"] == _z(30)


def test_a_missed_stop_shows_where_the_address_was_taken(api: Api, world: World) -> None:
    apply_events(
        api.store,
        [
            event("start", 0, "s1", "cust-1", ipv4=v4(7)),
            event("start", 20, "s2", "cust-2", ipv4=v4(7)),
        ],
    )
    [interval] = api.get("/v1/accounts/cust-1/history")["sessions"]
    assert interval["ended"] == _z(20)  # displaced, no Stop ever came
    assert _who(api, "100.64.0.7", 19.9)[0]["account"] == "cust-1"  # type: ignore[index]


def test_retention_deletes_old_intervals_in_batches(api: Api, world: World) -> None:
    old = now() - timedelta(days=500)

    def ago(days: float) -> float:
        return (old + timedelta(days=days) - at(0)).total_seconds() / 60

    apply_events(
        api.store,
        [
            # Held 100.64.0.1 with a missed Stop; 100.64.0.2 closed long ago.
            event("start", ago(0), "gone", "cust-1", ipv4=v4(1)),
            event("start", ago(1), "old", "cust-2", ipv4=v4(2)),
            event("stop", ago(2), "old", "cust-2", ipv4=v4(2)),
            # Took 100.64.0.1 from cust-1 and left long ago too.
            event("start", ago(3), "taker", "cust-3", ipv4=v4(1)),
            event("stop", ago(4), "taker", "cust-3", ipv4=v4(1)),
            # Recent: kept.
            event("start", ago(450), "new", "cust-4", ipv4=v4(4)),
            event("stop", ago(451), "new", "cust-4", ipv4=v4(4)),
        ],
    )
    assert len(history_rows(api.store)) == 4
    assert sweep.purge_history(api.store, 400) == 2
    # cust-1's open row had lost its address to the forgotten one: it ended
    # there, rather than coming back as the holder of 100.64.0.1.
    rows = {row[2]: row for row in history_rows(api.store)}
    assert set(rows) == {"gone", "new"}
    assert rows["gone"][10] is not None
    assert api.get("/v1/accounts?address=100.64.0.1&at=" + quote(now().isoformat()), expect=404)
    assert sweep.purge_history(api.store, 400) == 1  # the row it ended, at the next sweep
    assert sweep.purge_history(api.store, 400) == 0


def test_retention_is_bounded_per_transaction(api: Api, world: World, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sweep, "PURGE_BATCH", 3)
    monkeypatch.setattr(sweep, "PURGE_BATCHES", 2)
    start = now() - timedelta(days=500)
    minutes = (start - at(0)).total_seconds() / 60
    events = [
        event(kind, minutes + i, f"s{i}", f"cust-{i}", ipv4=v4(i + 1))
        for i in range(10)
        for kind in ("start", "stop")
    ]
    apply_events(api.store, events)
    assert sweep.purge_history(api.store, 400) == 6  # two batches of three, then the next sweep
    assert sweep.purge_history(api.store, 400) == 4


def test_the_running_sweeper_unbinds_stale_sessions_and_forgets_old_intervals(
    store: Store,
) -> None:
    """The controller's own sweeper does both, with nobody calling."""
    world(store)
    ancient = now() - timedelta(days=500)
    recent = now() - timedelta(hours=2)

    def minutes(moment: datetime) -> float:
        return (moment - at(0)).total_seconds() / 60

    apply_events(
        store,
        [
            event("start", minutes(ancient), "old", "cust-old", ipv4=v4(1)),
            event("stop", minutes(ancient) + 60, "old", "cust-old", ipv4=v4(1)),
            event("start", minutes(recent), "quiet", "cust-quiet", ipv4=v4(2)),
        ],
    )
    subscribers.start_session(store, "token:ops", subscribers.Binding("cust-rest", v4(3)))
    settings = settings_for(store, sweep_interval=0.05, stale_session_after=3600)
    with TestClient(create_app(settings, store, sweep=True)):
        wait_until(
            lambda: set(bindings(store)) == {"cust-rest"} and len(history_rows(store)) == 2,
            timeout=10,
            what="the sweeper neither unbound the silent session nor forgot the old one",
        )
    assert {(row[0], row[2]) for row in history_rows(store)} == {
        ("cust-quiet", "quiet"),
        ("cust-rest", None),
    }


def test_a_feed_start_of_a_quarantined_account_wakes_the_agents_long_poll(
    api: Api, world: World
) -> None:
    api.post("/v1/quarantines", {"account": "cust-q", "mode": "block", "reason": "r"})
    revision = api.get("/v1/gateways/gw-a/desired-state")["revision"]
    result: dict[str, Any] = {}

    def poll() -> None:
        params = {"since": revision, "wait": 30}
        result["document"] = api.get("/v1/gateways/gw-a/desired-state", params=params)

    waiter = threading.Thread(target=poll)
    waiter.start()
    wait_until_parked(api)
    apply_events(api.store, [event("start", 0, "s1", "cust-q", ipv4=v4(42))])
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    upserts = result["document"]["delta"]["quarantines"]["upserts"]
    assert [(q["key"], q["mode"]) for q in upserts] == [("100.64.0.42", "block")]
