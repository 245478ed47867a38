"""The notice portal's routes (role portal): holds by address, the notice log,
one-time codes, self-release and its limits, the grace period (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest
from ctl_support import Api, World

ALICE = "100.64.0.10"  # gw-a's dynamic pool: resolvers and portal configured


def held(api: Api, account: str = "alice", **extra: Any) -> dict[str, Any]:
    body = {
        "account": account,
        "mode": "walled-garden",
        "reason": "bot C2 seen in netflow, analyst note",
        "category": "botnet",
        "ticket": "ABUSE-13",
        **extra,
    }
    return api.post("/v1/quarantines", body)["quarantine"]


def portal(api: Api, method: str, path: str, expect: int, **kwargs: Any) -> Any:
    return api.call(method, path, role="portal", expect=expect, **kwargs).json()


def shown(api: Api, ident: int, address: str = ALICE) -> str:
    """The whole notice's code (``full``: after an acknowledgement, pages are reminders)."""
    body = {"address": address, "language": "ja", "host": "example.org", "full": True}
    answer = portal(api, "POST", "/v1/portal/notices", 200, json=body)
    assert answer["hold"]["id"] == ident
    code = answer["code"]
    assert isinstance(code, str) and len(code) == 6
    return code


def release(api: Api, ident: int, code: str | None, expect: int, **extra: Any) -> Any:
    body = {"address": ALICE, "release": True, **extra}
    if code is not None:
        body["code"] = code
    return portal(api, "POST", f"/v1/portal/holds/{ident}/acknowledge", expect, json=body)


@pytest.fixture
def alice(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": ALICE})


def test_lookup_shows_the_hold_without_the_analysts_reason(api: Api, alice: None) -> None:
    hold = held(api)
    found = portal(api, "GET", "/v1/portal/holds", 200, params={"address": ALICE})
    assert found["id"] == hold["id"] and found["account"] == "alice"
    assert (found["category"], found["ticket"], found["mode"]) == (
        "botnet",
        "ABUSE-13",
        "walled-garden",
    )
    assert found["self_release"] is True and found["releases_left"] == 3
    assert "reason" not in found
    # Nobody held, nobody bound, not an address: 404, 404, 422 naming it.
    api.put("/v1/accounts/bob/session", {"ipv4": "100.64.0.11"})
    portal(api, "GET", "/v1/portal/holds", 404, params={"address": "100.64.0.11"})
    portal(api, "GET", "/v1/portal/holds", 404, params={"address": "100.64.0.99"})
    body = portal(api, "GET", "/v1/portal/holds", 422, params={"address": "100.64.0.0/24"})
    assert "address" in str(body)


def test_ack_with_the_code_releases_and_the_log_shows_it(api: Api, alice: None) -> None:
    hold = held(api)
    code = shown(api, hold["id"])
    # No code, a wrong code: refused, and the hold stays.
    assert "code" in str(release(api, hold["id"], None, 422))
    assert "code" in str(release(api, hold["id"], "AAAAAA", 422))
    assert api.get(f"/v1/quarantines/{hold['id']}")["state"] == "active"
    answer = release(api, hold["id"], code.lower(), 200)
    assert answer == {"acknowledged": True, "released": True, "releases_left": 2}
    lifted = api.get(f"/v1/quarantines/{hold['id']}")
    assert (lifted["state"], lifted["ended_by"]) == ("lifted", "subscriber:alice")
    audit = api.get("/v1/audit", params={"actor": "subscriber:alice"})
    assert [e["action"] for e in audit] == ["quarantine.lift"]
    history = api.get("/v1/accounts/alice/history")
    assert [n["kind"] for n in history["notices"]] == ["released", "acknowledged", "shown"]
    assert history["notices"][2]["host"] == "example.org"
    assert history["notices"][0]["grace_until"] is not None
    # The code was spent, and the hold is gone: nothing more to do.
    release(api, hold["id"], code, 409)


def test_a_code_is_one_time_and_for_its_own_hold(api: Api, alice: None) -> None:
    hold = held(api)
    code = shown(api, hold["id"])
    ack = {"address": ALICE, "code": code}
    answer = portal(api, "POST", f"/v1/portal/holds/{hold['id']}/acknowledge", 200, json=ack)
    assert answer == {"acknowledged": True, "released": False, "releases_left": 3}
    found = portal(api, "GET", "/v1/portal/holds", 200, params={"address": ALICE})
    assert found["acknowledged_at"] is not None
    body = portal(api, "POST", f"/v1/portal/holds/{hold['id']}/acknowledge", 422, json=ack)
    assert "code" in str(body)
    # Someone else's address cannot act on alice's hold, even with her code;
    # and a notice for an address nobody holds is a 404 (nothing to show).
    api.put("/v1/accounts/bob/session", {"ipv4": "100.64.0.11"})
    code = shown(api, hold["id"])
    other = {"address": "100.64.0.11", "code": code, "release": True}
    body = portal(api, "POST", f"/v1/portal/holds/{hold['id']}/acknowledge", 422, json=other)
    assert "address" in str(body)
    portal(api, "POST", "/v1/portal/notices", 404, json={"address": "100.64.0.11"})
    assert api.get(f"/v1/quarantines/{hold['id']}")["state"] == "active"


def test_the_fourth_self_release_in_the_window_is_refused(api: Api, alice: None) -> None:
    for round_ in range(3):
        hold = held(api, category=f"cat_{round_}")  # another category: no grace period
        release(api, hold["id"], shown(api, hold["id"]), 200)
    hold = held(api, category="cat_3")
    found = portal(api, "GET", "/v1/portal/holds", 200, params={"address": ALICE})
    assert (found["releases_used"], found["releases_left"]) == (3, 0)
    code = shown(api, hold["id"])
    body = release(api, hold["id"], code, 409)
    assert "limit" in str(body)
    # All or nothing: still held, no acknowledgement logged, the code unspent.
    assert api.get(f"/v1/quarantines/{hold['id']}")["state"] == "active"
    kinds = [n["kind"] for n in api.get("/v1/accounts/alice/history")["notices"]]
    assert kinds.count("acknowledged") == 3 and kinds.count("released") == 3
    ack = {"address": ALICE, "code": code}
    portal(api, "POST", f"/v1/portal/holds/{hold['id']}/acknowledge", 200, json=ack)


def test_grace_period_refuses_the_same_category_again(api: Api, alice: None) -> None:
    hold = held(api)
    release(api, hold["id"], shown(api, hold["id"]), 200)
    body = {"account": "alice", "mode": "walled-garden", "reason": "again", "category": "botnet"}
    refused = api.call("POST", "/v1/quarantines", json=body, expect=409).json()
    assert "grace" in str(refused)
    bulk = {"accounts": ["alice"], "mode": "smtp", "reason": "feed", "category": "botnet"}
    api.call("POST", "/v1/quarantines/bulk", json=bulk, expect=409)
    assert api.get("/v1/accounts/alice")["quarantine"] is None
    # Another category holds at once; staff may override the grace period.
    api.post("/v1/quarantines", {**body, "category": "spam"})
    api.post("/v1/quarantines", {**body, "ignore_grace": True})


def test_self_release_follows_the_holds_policy(api: Api, alice: None) -> None:
    smtp = {"account": "alice", "mode": "smtp", "reason": "spam run"}
    body = api.call("POST", "/v1/quarantines", json={**smtp, "self_release": True}, expect=422)
    assert "self_release" in body.text
    hold = api.post("/v1/quarantines", smtp)["quarantine"]
    assert hold["self_release"] is False
    assert "cannot be released" in str(release(api, hold["id"], shown(api, hold["id"]), 409))
    # A walled-garden hold the analyst marked as staff-only.
    hold = held(api, self_release=False)
    assert hold["self_release"] is False
    release(api, hold["id"], shown(api, hold["id"]), 409)
    assert api.get(f"/v1/quarantines/{hold['id']}")["state"] == "active"


def test_the_portal_token_can_do_nothing_else(api: Api, alice: None) -> None:
    hold = held(api)
    create = {"account": "bob", "mode": "block", "reason": "x"}
    api.call("POST", "/v1/quarantines", role="portal", json=create, expect=403)
    lift = {"reason": "x"}
    api.call("POST", f"/v1/quarantines/{hold['id']}/lift", role="portal", json=lift, expect=403)
    api.call("GET", "/v1/accounts/alice/history", role="portal", expect=403)
    # And staff cannot use the portal's routes (they lift through /v1/quarantines).
    api.call("GET", "/v1/portal/holds", params={"address": ALICE}, expect=403)
    api.call("POST", "/v1/portal/notices", json={"address": ALICE}, expect=403)


def test_an_ipv6_subscriber_is_found_by_any_address_of_its_delegation(
    api: Api, alice: None
) -> None:
    """The portal sees a /128; the session holds the /56 (and a /64 at the same
    network address would look alike by hex key)."""
    api.put("/v1/accounts/alice/session", {"ipv4": ALICE, "ipv6": "2001:db8:a000:100::/56"})
    hold = held(api)
    body = {"address": "2001:db8:a000:1ff::1234"}
    assert portal(api, "POST", "/v1/portal/notices", 200, json=body)["hold"]["id"] == hold["id"]
    outside = {"address": "2001:db8:a000:200::1"}
    portal(api, "POST", "/v1/portal/notices", 404, json=outside)


def test_a_batch_of_notices_answers_each_in_order(api: Api, alice: None) -> None:
    """The portal's batches: each notice its own hold and code, null where the
    address is not held (IPv4 and IPv6 mixed), each logged; a bad address is
    a 422 naming its place in the list, and nothing of that batch is logged."""
    api.put("/v1/accounts/alice/session", {"ipv4": ALICE, "ipv6": "2001:db8:a000:100::/56"})
    api.put("/v1/accounts/bob/session", {"ipv4": "100.64.0.11"})
    hold = held(api)
    notices = [
        {"address": ALICE, "language": "en"},
        {"address": "100.64.0.11"},  # bound, not held
        {"address": "2001:db8:a000:1ff::1", "host": "example.org"},
        {"address": "100.64.0.99"},  # nobody's
        {"address": ALICE, "language": "ja"},
    ]
    answers = portal(api, "POST", "/v1/portal/notices/batch", 200, json={"notices": notices})
    found = answers["answers"]
    ident = hold["id"]
    assert [a and a["hold"]["id"] for a in found] == [ident, None, ident, None, ident]
    codes = [a["code"] for a in found if a]
    assert len(set(codes)) == 3  # a code per notice shown
    assert release(api, hold["id"], codes[1], 200)["released"] is True
    log = api.get("/v1/accounts/alice/history")
    assert sum(1 for e in log["notices"] if e["kind"] == "shown") == 3
    bad = [{"address": ALICE}, {"address": "100.64.0.0/24"}]
    refused = portal(api, "POST", "/v1/portal/notices/batch", 422, json={"notices": bad})
    assert "notices.1.address" in str(refused)
    assert sum(1 for e in api.get("/v1/accounts/alice/history")["notices"]) == len(log["notices"])
    portal(api, "POST", "/v1/portal/notices/batch", 422, json={"notices": []})
    too_many = {"notices": [{"address": ALICE}] * 257}
    portal(api, "POST", "/v1/portal/notices/batch", 422, json=too_many)


def test_an_acknowledged_hold_gets_reminders_without_codes(api: Api, alice: None) -> None:
    hold = held(api)
    body = {"address": ALICE, "language": "en"}
    first = portal(api, "POST", "/v1/portal/notices", 200, json=body)
    assert first["reminder"] is False and first["hold"]["acknowledged_at"] is None
    release(api, hold["id"], first["code"], 200, release=False)
    again = portal(api, "POST", "/v1/portal/notices", 200, json=body)
    assert again["reminder"] is True and again["code"] is None
    assert again["hold"]["acknowledged_at"] is not None
    full = portal(api, "POST", "/v1/portal/notices", 200, json={**body, "full": True})
    assert full["reminder"] is False and len(full["code"]) == 6
    assert release(api, hold["id"], full["code"], 200)["released"] is True
    kinds = [e["kind"] for e in api.get("/v1/accounts/alice/history")["notices"]]
    assert kinds == ["released", "acknowledged", "shown", "reminded", "acknowledged", "shown"]
    # A new hold is a new notice: the acknowledgement was for the old one.
    newer = held(api, category="spam")
    fresh = portal(api, "POST", "/v1/portal/notices", 200, json=body)
    assert fresh["hold"]["id"] == newer["id"] and fresh["reminder"] is False


def test_a_hold_on_an_address_shows_and_acknowledges_but_never_self_releases(
    api: Api, world: World
) -> None:
    """A hold placed on an address (no account, no session: a static line)
    is steered like any other; the portal shows its notice, records the
    acknowledgement (then reminders), and leaves the release to support."""
    static = "100.64.0.50"
    body = {"prefix": static, "mode": "walled-garden", "reason": "x", "category": "spam"}
    hold = api.post("/v1/quarantines", body)["quarantine"]
    notice = portal(api, "POST", "/v1/portal/notices", 200, json={"address": static})
    assert notice["hold"]["id"] == hold["id"] and notice["hold"]["account"] is None
    assert notice["hold"]["self_release"] is False and notice["code"]
    portal(api, "POST", "/v1/portal/notices", 404, json={"address": "100.64.0.51"})
    ack = {"address": static, "code": notice["code"], "release": True}
    refused = portal(api, "POST", f"/v1/portal/holds/{hold['id']}/acknowledge", 409, json=ack)
    assert "cannot be released" in str(refused)
    ack["release"] = False
    path = f"/v1/portal/holds/{hold['id']}/acknowledge"
    assert portal(api, "POST", path, 200, json=ack)["released"] is False
    again = portal(api, "POST", "/v1/portal/notices", 200, json={"address": static})
    assert again["reminder"] is True
    # Someone at another address cannot act on it.
    other = {"address": "100.64.0.51", "code": notice["code"]}
    portal(api, "POST", path, 422, json=other)
    assert api.get(f"/v1/quarantines/{hold['id']}")["state"] == "active"
