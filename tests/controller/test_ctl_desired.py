"""Desired state for agents: snapshots, deltas, cursors, long-poll, key placement."""

from __future__ import annotations

import threading
import time
from typing import Any

from ctl_support import Api, World, wait_until_parked

from edgectl.controller.store import sweep
from edgectl.model import lint, state_from_data, state_to_data
from edgectl.model.delta import patch
from edgectl.model.serial import delta_from_data
from edgectl.testing.wait import wait_until


def state(api: Api, gateway: str, since: int | None = None, **params: Any) -> Any:
    query = {} if since is None else {"since": since}
    return api.get(f"/v1/gateways/{gateway}/desired-state", params={**query, **params})


def quarantine_keys(document: Any) -> dict[str, str]:
    if document["kind"] == "snapshot":
        return {q["key"]: q["mode"] for q in document["state"]["quarantines"]}
    raise AssertionError("not a snapshot")


def hold(api: Api, account: str, mode: str = "smtp", **extra: Any) -> Any:
    body = {
        "account": account,
        "mode": mode,
        "reason": "spam reports",
        "ticket": "ABUSE-1",
        **extra,
    }
    return api.post("/v1/quarantines", body, role="abuse")


def test_snapshot_is_the_models_state(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10", "ipv6": "2001:db8:a000:100::/56"})
    hold(api, "alice", "walled-garden", duration=3600)
    document = state(api, "gw-a")
    assert document["kind"] == "snapshot"
    parsed = state_from_data(document["state"])
    # Served bytes are exactly what the model would write for the same state.
    assert state_to_data(parsed) == document["state"]
    assert parsed.revision == document["revision"]
    assert {p.name for p in parsed.pools} == {"dyn_a", "biz"}
    assert [p.name for p in parsed.rate_limits] == ["residential"]
    keys = {str(k): q for k, q in parsed.quarantines.items()}
    assert set(keys) == {"100.64.0.10", "2001:db8:a000:100::/56"}
    assert keys["100.64.0.10"].expires is not None  # the kernel can time it out
    assert keys["100.64.0.10"].account == "alice"
    assert state(api, "gw-b")["state"]["quarantines"] == []


def test_ipv6_key_is_the_pools_delegated_prefix(api: Api, world: World) -> None:
    # A session reporting a /64 inside a /56-delegating pool is held at the /56.
    api.put("/v1/accounts/bob/session", {"ipv6": "2001:db8:a000:2a0::/60"})
    hold(api, "bob")
    assert quarantine_keys(state(api, "gw-a")) == {"2001:db8:a000:200::/56": "smtp"}


def test_delta_since_cursor_and_patch(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    first = state(api, "gw-a")
    before = state_from_data(first["state"])
    created = hold(api, "alice")
    document = state(api, "gw-a", since=first["revision"])
    assert document["kind"] == "delta"
    delta = delta_from_data(document["delta"])
    assert delta.from_revision == first["revision"]
    assert delta.structure is None
    assert [str(q.key) for q in delta.quarantines.upserts] == ["100.64.0.10"]
    after = patch(before, delta)
    assert after == state_from_data(state(api, "gw-a")["state"])
    # Lifting shows up as a removal.
    api.post(
        f"/v1/quarantines/{created['quarantine']['id']}/lift", {"reason": "cleaned"}, role="abuse"
    )
    lifted = state(api, "gw-a", since=document["revision"])
    assert lifted["delta"]["quarantines"] == {"upserts": [], "removals": ["100.64.0.10"]}


def test_up_to_date_cursor_gets_empty_delta(api: Api, world: World) -> None:
    revision = state(api, "gw-a")["revision"]
    document = state(api, "gw-a", since=revision)
    assert document["kind"] == "delta"
    assert document["delta"]["from_revision"] == document["delta"]["to_revision"] == revision
    assert document["delta"]["quarantines"] == {"upserts": [], "removals": []}


def test_unknown_or_future_cursor_gets_snapshot(api: Api, world: World) -> None:
    revision = state(api, "gw-a")["revision"]
    assert state(api, "gw-a", since=revision + 1000)["kind"] == "snapshot"
    assert state(api, "gw-a", since=0)["kind"] == "snapshot"  # before the gateway existed


def test_cursor_older_than_purged_tombstones_gets_snapshot(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    old = state(api, "gw-a")["revision"]
    created = hold(api, "alice")
    api.post(f"/v1/quarantines/{created['quarantine']['id']}/lift", {"reason": "ok"}, role="abuse")
    assert state(api, "gw-a", since=old)["kind"] == "delta"
    assert sweep.purge_tombstones(api.store, retention=-1) == 1
    assert state(api, "gw-a", since=old)["kind"] == "snapshot"


def test_change_elsewhere_produces_no_delta(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    api.put("/v1/accounts/bert/session", {"ipv4": "100.65.0.20"})
    revision_a = state(api, "gw-a")["revision"]
    # A quarantine on gw-b's pool, another gateway's pool change, and an
    # unheld account moving: none of it concerns gw-a.
    hold(api, "bert")
    api.put(
        "/v1/pools/dyn_b",
        {"kind": "dynamic", "prefixes": ["100.65.0.0/16"], "op25b_shadow": True},
    )
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.11"})
    api.post("/v1/sessions/bulk", {"bindings": [{"account": "dave", "ipv4": "100.64.7.7"}]})
    document = state(api, "gw-a", since=revision_a)
    assert document["revision"] == revision_a
    assert document["delta"]["quarantines"] == {"upserts": [], "removals": []}
    assert state(api, "gw-b")["revision"] > revision_a


def test_session_move_moves_the_key(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    hold(api, "alice", "block")
    revision = state(api, "gw-a")["revision"]
    # Alice reconnects and lands in gw-b's pool: the hold follows her there.
    api.post("/v1/sessions/bulk", {"bindings": [{"account": "alice", "ipv4": "100.65.3.3"}]})
    moved = state(api, "gw-a", since=revision)
    assert moved["delta"]["quarantines"] == {"upserts": [], "removals": ["100.64.0.10"]}
    assert quarantine_keys(state(api, "gw-b")) == {"100.65.3.3": "block"}
    # Someone else gets her old address: not held.
    api.put("/v1/accounts/erin/session", {"ipv4": "100.64.0.10"})
    assert quarantine_keys(state(api, "gw-a")) == {}
    # She moves back onto an address that erin held (a missed RADIUS stop).
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    assert quarantine_keys(state(api, "gw-a")) == {"100.64.0.10": "block"}
    assert api.get("/v1/accounts/erin")["session"] is None


def test_session_stop_keeps_the_hold_for_the_next_address(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    hold(api, "alice")
    api.call("DELETE", "/v1/accounts/alice/session", expect=204)
    assert quarantine_keys(state(api, "gw-a")) == {}
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.99"})
    assert quarantine_keys(state(api, "gw-a")) == {"100.64.0.99": "smtp"}


def test_prefix_quarantine_for_unassigned_space(api: Api, world: World) -> None:
    # A /64 in a pool that delegates /56s is held at its subscriber's /56.
    body = {"prefix": "2001:db8:a000:1ff::/64", "mode": "block", "reason": "scan"}
    created = api.post("/v1/quarantines", body, role="abuse")
    assert created["quarantine"]["prefix"] == "2001:db8:a000:1ff::/64"
    assert quarantine_keys(state(api, "gw-a")) == {"2001:db8:a000:100::/56": "block"}


def test_exemption_reaches_dynamic_gateways(api: Api, world: World) -> None:
    api.put("/v1/accounts/shop/session", {"ipv4": "100.64.5.5"})
    api.post(
        "/v1/exemptions",
        {"account": "shop", "ticket": "SR-7", "reason": "runs its own MTA", "duration": 600},
        role="abuse",
    )
    exemptions = state(api, "gw-a")["state"]["exemptions"]
    assert [(e["key"], e["ticket"]) for e in exemptions] == [("100.64.5.5", "SR-7")]


def test_expiry_is_enforced_by_the_sweeper(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    hold(api, "alice", duration=1)
    revision = state(api, "gw-a")["revision"]
    wait_until(
        lambda: sweep.expire(api.store) != 0,
        timeout=5,
        what="the quarantine never expired",
        interval=0.05,
    )
    assert state(api, "gw-a", since=revision)["delta"]["quarantines"]["removals"] == ["100.64.0.10"]
    (entry,) = api.get("/v1/quarantines", params={"state": "expired"})
    assert entry["ended_by"] == "system:expiry"
    assert (
        api.get("/v1/audit", params={"action": "quarantine.expire"})[0]["actor"] == "system:expiry"
    )


def test_long_poll_returns_when_the_gateway_changes(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    revision = state(api, "gw-a")["revision"]
    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        result["document"] = state(api, "gw-a", since=revision, wait=30)
        result["took"] = time.monotonic() - started

    waiter = threading.Thread(target=poll)
    waiter.start()
    wait_until_parked(api)
    # An unrelated change must not end the wait; then a real one must, at once.
    api.post("/v1/sessions/bulk", {"bindings": [{"account": "zed", "ipv4": "100.65.9.9"}]})
    api.post("/v1/quarantines", {"account": "zed", "mode": "smtp", "reason": "r"}, role="abuse")
    assert waiter.is_alive()
    hold(api, "alice")
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    assert result["document"]["kind"] == "delta"
    assert result["took"] < 10
    assert [q["key"] for q in result["document"]["delta"]["quarantines"]["upserts"]] == [
        "100.64.0.10"
    ]


def test_long_poll_times_out_with_empty_delta(api: Api, world: World) -> None:
    revision = state(api, "gw-a")["revision"]
    started = time.monotonic()
    document = state(api, "gw-a", since=revision, wait=0.3)
    assert time.monotonic() - started >= 0.25
    assert document["delta"]["to_revision"] == revision


def test_agent_reads_its_own_gateway_only(api: Api, world: World) -> None:
    api.call("GET", "/v1/gateways/gw-a/desired-state", role=world.agent_a, expect=200)
    api.call("GET", "/v1/gateways/gw-b/desired-state", role=world.agent_a, expect=403)
    revision = state(api, "gw-a")["revision"]
    report = {"applied_revision": revision, "detail": {"elements": 0}}
    gateway = api.post("/v1/gateways/gw-a/status", report, role=world.agent_a)
    assert gateway["converged"] is True
    api.call("POST", "/v1/gateways/gw-b/status", role=world.agent_a, json=report, expect=403)


def test_served_states_stay_lint_clean_when_sessions_move(api: Api, world: World) -> None:
    # Walled garden on gw-a; alice then moves to gw-b, which has no garden.
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    hold(api, "alice", "walled-garden")
    api.put("/v1/accounts/alice/session", {"ipv4": "100.65.0.10"})
    assert quarantine_keys(state(api, "gw-b")) == {"100.65.0.10": "block"}
    # A held account landing on a relay address (in a static pool) is not held there.
    api.put("/v1/pools/biz", {"kind": "static", "prefixes": ["203.0.113.0/24", "198.51.100.0/24"]})
    api.put("/v1/accounts/alice/session", {"ipv4": "198.51.100.25"})
    for gateway in ("gw-a", "gw-b"):
        served = state_from_data(state(api, gateway)["state"])
        assert lint(served) == []
        assert served.quarantines == {}
