"""Resource round trips and the audit trail they leave."""

from __future__ import annotations

from ctl_support import Api, World


def test_quarantine_lifecycle_and_audit(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    body = {"account": "alice", "mode": "smtp", "reason": "spam run", "ticket": "AB-1"}
    created = api.call("POST", "/v1/quarantines", role="abuse", json=body, expect=201).json()
    assert created["outcome"] == "created"
    ident = created["quarantine"]["id"]
    # One active per account: a second quarantine updates the first and says so.
    again = {**body, "mode": "block", "reason": "still spamming", "duration": 3600}
    updated = api.call("POST", "/v1/quarantines", role="abuse", json=again, expect=200).json()
    assert updated["outcome"] == "updated"
    assert updated["quarantine"]["id"] == ident
    assert updated["quarantine"]["mode"] == "block"
    assert updated["quarantine"]["expires_at"] is not None
    lifted = api.post(f"/v1/quarantines/{ident}/lift", {"reason": "customer cleaned"}, role="abuse")
    assert lifted["state"] == "lifted"
    assert lifted["ended_by"] == "token:test-abuse"
    trail = api.get("/v1/audit", params={"object_type": "quarantine", "object_id": str(ident)})
    assert [e["action"] for e in trail] == [
        "quarantine.create",
        "quarantine.update",
        "quarantine.lift",
    ]
    assert [e["reason"] for e in trail] == ["spam run", "still spamming", "customer cleaned"]
    assert {e["actor"] for e in trail} == {"token:test-abuse"}
    assert trail[0]["before"] is None
    assert trail[1]["before"]["mode"] == "smtp" and trail[1]["after"]["mode"] == "block"
    assert trail[2]["after"]["state"] == "lifted"
    # A new quarantine after the lift is a new record; history keeps both.
    api.call("POST", "/v1/quarantines", role="abuse", json=body, expect=201)
    history = api.get("/v1/accounts/alice/history")
    assert [q["state"] for q in history["quarantines"]] == ["active", "lifted"]
    assert api.get("/v1/accounts/alice")["quarantine"]["mode"] == "smtp"


def test_quarantine_filters(api: Api, world: World) -> None:
    for account, ticket in (("a1", "T-1"), ("a2", "T-1"), ("a3", "T-2")):
        body = {"account": account, "mode": "smtp", "reason": "r", "ticket": ticket}
        api.post("/v1/quarantines", body, role="abuse")
    ident = api.get("/v1/quarantines", params={"account": "a3"})[0]["id"]
    api.post(f"/v1/quarantines/{ident}/lift", {"reason": "ok"}, role="abuse")
    active = api.get("/v1/quarantines")
    assert sorted(q["account"] for q in active) == ["a1", "a2"]
    assert len(api.get("/v1/quarantines", params={"ticket": "T-1"})) == 2
    assert [q["account"] for q in api.get("/v1/quarantines", params={"state": "lifted"})] == ["a3"]
    assert api.get("/v1/quarantines", params={"state": "expired"}) == []
    assert len(api.get("/v1/quarantines", params={"state": "all", "limit": 2})) == 2


def test_catalogue_round_trip(api: Api, world: World) -> None:
    assert [p["name"] for p in api.get("/v1/pools")] == ["biz", "dyn_a", "dyn_b", "infra"]
    assert api.get("/v1/pools/dyn_a")["gateways"] == ["gw-a"]
    profile = api.put(
        "/v1/rate-limits/residential", {"new_per_minute": 60, "burst": 20, "shadow": True}
    )
    assert profile["shadow"] is True
    state = api.get("/v1/gateways/gw-a/desired-state")["state"]
    assert state["rate_limits"][0]["new_per_minute"] == 60
    api.post("/v1/relays", {"name": "mx2", "prefixes": ["198.51.100.26"]})
    assert {r["name"] for r in api.get("/v1/gateways/gw-b/desired-state")["state"]["relays"]} == {
        "mx",
        "mx2",
    }
    api.call("DELETE", "/v1/relays/mx2", expect=204)
    api.call("GET", "/v1/relays/mx2", expect=404)


def test_gateway_update_recompiles_its_entries(api: Api, world: World) -> None:
    api.put("/v1/accounts/bert/session", {"ipv4": "100.65.0.9"})
    api.post("/v1/quarantines", {"account": "bert", "mode": "smtp", "reason": "r"}, role="abuse")
    assert api.get("/v1/gateways/gw-a/desired-state")["state"]["quarantines"] == []
    revision = api.get("/v1/gateways/gw-a")["revision"]
    api.call("PATCH", "/v1/gateways/gw-a", json={"pools": ["dyn_a", "biz"]}, expect=200)
    assert api.get("/v1/gateways/gw-a")["revision"] == revision  # nothing changed for it
    # gw-b moves its pool to gw-a: the hold moves with it, with the structure.
    # Serving other pools moves gw-a to another entry scope (store.scopes),
    # whose history its agent never followed: a snapshot, not a delta.
    api.call("PATCH", "/v1/gateways/gw-b", json={"pools": []}, expect=200)
    api.call("PATCH", "/v1/gateways/gw-a", json={"pools": ["dyn_a", "dyn_b"]}, expect=200)
    document = api.get("/v1/gateways/gw-a/desired-state", params={"since": revision})
    assert document["kind"] == "snapshot"
    state = document["state"]
    assert [p["name"] for p in state["pools"]] == ["dyn_a", "dyn_b"]
    assert [q["key"] for q in state["quarantines"]] == ["100.65.0.9"]
    assert api.get("/v1/gateways/gw-b/desired-state")["state"]["quarantines"] == []


def test_token_rotation_and_gateway_delete(api: Api, world: World) -> None:
    old = world.agent_b
    new = api.post("/v1/gateways/gw-b/token", None)["agent_token"]
    api.call("GET", "/v1/gateways/gw-b/desired-state", role=old, expect=401)
    api.call("GET", "/v1/gateways/gw-b/desired-state", role=new, expect=200)
    api.call("DELETE", "/v1/gateways/gw-b", expect=204)
    api.call("GET", "/v1/gateways/gw-b/desired-state", role=new, expect=401)
    api.call("GET", "/v1/gateways/gw-b", expect=404)


def test_bulk_quarantine(api: Api, world: World) -> None:
    bindings = [{"account": f"bot{i}", "ipv4": f"100.64.1.{i}"} for i in range(1, 21)]
    api.post("/v1/sessions/bulk", {"bindings": bindings})
    api.post("/v1/quarantines", {"account": "bot1", "mode": "smtp", "reason": "r"}, role="abuse")
    revision = api.get("/v1/gateways/gw-a")["revision"]
    body = {"accounts": [b["account"] for b in bindings], "mode": "block", "reason": "botnet"}
    assert api.post("/v1/quarantines/bulk", body, role="abuse") == {"created": 19, "updated": 1}
    delta = api.get("/v1/gateways/gw-a/desired-state", params={"since": revision})["delta"]
    assert len(delta["quarantines"]["upserts"]) == 20
    assert {q["mode"] for q in delta["quarantines"]["upserts"]} == {"block"}
    trail = api.get("/v1/audit", params={"action": "quarantine.create", "limit": 1000})
    assert len(trail) == 20  # bot1's single create plus 19 from the batch
    # One protected address refuses the whole batch.
    api.put("/v1/pools/biz", {"kind": "static", "prefixes": ["203.0.113.0/24", "198.51.100.0/24"]})
    api.put("/v1/accounts/relay_box/session", {"ipv4": "198.51.100.25"})
    body = {"accounts": ["bot1", "relay_box"], "mode": "smtp", "reason": "x"}
    api.call("POST", "/v1/quarantines/bulk", role="abuse", json=body, expect=422)
    assert api.get("/v1/accounts/bot1")["quarantine"]["mode"] == "block"


def test_catalogue_changes_reach_the_next_hold(api: Api, world: World) -> None:
    # A hold compiles (and caches) the catalogue; later catalogue edits must be seen.
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    api.post("/v1/quarantines", {"account": "alice", "mode": "smtp", "reason": "r"}, role="abuse")
    api.post("/v1/pools", {"name": "dyn_c", "kind": "dynamic", "prefixes": ["100.66.0.0/16"]})
    api.call("PATCH", "/v1/gateways/gw-a", json={"pools": ["dyn_a", "biz", "dyn_c"]}, expect=200)
    api.put("/v1/accounts/bob/session", {"ipv4": "100.66.0.1"})
    api.post("/v1/quarantines", {"account": "bob", "mode": "block", "reason": "r"}, role="abuse")
    keys = {q["key"] for q in api.get("/v1/gateways/gw-a/desired-state")["state"]["quarantines"]}
    assert keys == {"100.64.0.10", "100.66.0.1"}
    api.post(
        "/v1/pools", {"name": "infra2", "kind": "infrastructure", "prefixes": ["100.67.0.0/16"]}
    )
    body = {"prefix": "100.67.0.9", "mode": "smtp", "reason": "r"}
    response = api.call("POST", "/v1/quarantines", role="abuse", json=body, expect=422)
    assert "pools[infra2]" in response.text


def test_who_holds_an_address(api: Api, world: World) -> None:
    api.post(
        "/v1/sessions/bulk",
        {
            "bindings": [
                {"account": "alice", "ipv4": "100.64.0.10", "ipv6": "2001:db8:a000:100::/56"},
                {"account": "bob", "ipv4": "100.64.0.11", "ipv6": "2001:db8:a000:200::/56"},
            ]
        },
    )

    def who(address: str) -> list[str]:
        found = api.get("/v1/accounts", params={"address": address}, role="abuse")
        return [entry["account"] for entry in found]

    assert who("100.64.0.10") == ["alice"]
    assert who("2001:db8:a000:1ff::1234") == ["alice"]  # one /128 inside her /56
    assert who("2001:db8:a000::/48") == ["alice", "bob"]  # a report naming a wider block
    nobody = api.call("GET", "/v1/accounts", params={"address": "100.64.0.99"}, role="abuse")
    assert (nobody.status_code, nobody.json()) == (404, {"detail": "nobody held 100.64.0.99 now"})
    api.call("GET", "/v1/accounts", params={"address": "nope"}, role="abuse", expect=422)


def test_nested_pools_the_most_specific_wins(api: Api, world: World) -> None:
    # Business customers numbered from a static /24 (and a /40 with /64
    # delegations) carved out of gw-a's dynamic pool.
    nested = {
        "name": "biz_in_dyn",
        "kind": "static",
        "prefixes": ["100.64.7.0/24", "2001:db8:a100::/40"],
        "subscriber_prefix_len": 64,
    }
    api.call("POST", "/v1/pools", json=nested, expect=201)
    duplicate = {"name": "dup", "kind": "static", "prefixes": ["100.64.7.0/24"]}
    refused = api.call("POST", "/v1/pools", json=duplicate, expect=422)
    assert "pools[biz_in_dyn]" in refused.text
    api.call("PATCH", "/v1/gateways/gw-a", json={"pools": ["dyn_a", "biz", "biz_in_dyn"]})
    api.put("/v1/accounts/shop/session", {"ipv4": "100.64.7.9", "ipv6": "2001:db8:a100:5::/64"})
    api.put("/v1/accounts/home/session", {"ipv4": "100.64.8.9", "ipv6": "2001:db8:a200:100::/56"})
    for account in ("shop", "home"):
        api.post(
            "/v1/quarantines", {"account": account, "mode": "smtp", "reason": "r"}, role="abuse"
        )
        api.post("/v1/exemptions", {"account": account, "reason": "r", "ticket": "T-1"})
    state = api.get("/v1/gateways/gw-a/desired-state")["state"]
    # One key per address, by its most specific pool: the shop's IPv6 key is
    # its /64 (the static pool's delegation), not the dynamic pool's /56.
    assert sorted(q["key"] for q in state["quarantines"]) == [
        "100.64.7.9",
        "100.64.8.9",
        "2001:db8:a100:5::/64",
        "2001:db8:a200:100::/56",
    ]
    # OP25B exemptions only where OP25B applies: the dynamic pool.
    assert sorted(e["key"] for e in state["exemptions"]) == ["100.64.8.9", "2001:db8:a200:100::/56"]
