"""Guard rails and malformed input: clean 4xx naming the field, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from ctl_support import Api, World

from edgectl.controller.store import schema


def fingerprint(api: Api) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, counter and audit log included."""
    with api.store.read() as connection:
        return {
            table.name: sorted(
                (tuple(str(v) for v in row) for row in connection.execute(sa.select(table))),
            )
            for table in schema.metadata.sorted_tables
        }


def field_of(response: Any) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, list), response.text
    return ".".join(str(part) for part in detail[0]["loc"])


QUARANTINE = {"mode": "smtp", "reason": "spam"}

# (method, path, body, role, status, field or None)
REJECTED: list[tuple[str, str, Any, str | None, int, str | None]] = [
    ("POST", "/v1/quarantines", {**QUARANTINE, "prefix": "0.0.0.0/0"}, "abuse", 422, "body.prefix"),
    ("POST", "/v1/quarantines", {**QUARANTINE, "prefix": "::/0"}, "abuse", 422, "body.prefix"),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "prefix": "198.51.100.25"},
        "abuse",
        422,
        "body.prefix",
    ),
    ("POST", "/v1/quarantines", {**QUARANTINE, "prefix": "192.0.2.9"}, "abuse", 422, "body.prefix"),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "prefix": "100.64.0.0/24"},
        "abuse",
        422,
        "body.prefix",
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "prefix": "2001:db8:a000::/40"},
        "abuse",
        422,
        "body.prefix",
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "prefix": "2001:db8:a000::1/64"},
        "abuse",
        422,
        "body.prefix",
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "prefix": "2001:db8:a000::/80"},
        "abuse",
        422,
        "body.prefix",
    ),
    ("POST", "/v1/quarantines", {**QUARANTINE, "prefix": "8.8.8.8"}, "abuse", 422, "body.prefix"),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "relay_box"},
        "abuse",
        422,
        "body.account",
    ),
    ("POST", "/v1/quarantines", {"mode": "smtp", "account": "x"}, "abuse", 422, "body.reason"),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "x", "reason": ""},
        "abuse",
        422,
        "body.reason",
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "x", "mode": "nuke"},
        "abuse",
        422,
        "body.mode",
    ),
    ("POST", "/v1/quarantines", {**QUARANTINE}, "abuse", 422, "body"),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "x", "expires": "2001-01-01T00:00:00Z"},
        "abuse",
        422,
        "body.expires",
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "x", "expires": "2099-01-01T00:00:00"},
        "abuse",
        422,
        "body.expires",
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "x", "mode": "walled-garden"},
        "abuse",
        201,
        None,
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "bert", "mode": "walled-garden"},
        "abuse",
        422,
        "body.mode",
    ),
    ("POST", "/v1/quarantines", {**QUARANTINE, "account": "bert"}, "viewer", 403, None),
    ("POST", "/v1/quarantines", {**QUARANTINE, "account": "bert"}, None, 401, None),
    ("POST", "/v1/quarantines/999/lift", {"reason": "x"}, "abuse", 404, None),
    ("POST", "/v1/quarantines/0/lift", {"reason": "x"}, "abuse", 422, "path.ident"),
    ("GET", "/v1/quarantines/abc", None, "abuse", 422, "path.ident"),
    (
        "PATCH",
        "/v1/gateways/gw-a",
        {"settings": {"op25b_ports": [25, 587]}},
        "netops",
        422,
        "body.settings.op25b_ports.1",
    ),
    (
        "PATCH",
        "/v1/gateways/gw-a",
        {"settings": {"op25b_ports": [465]}},
        "netops",
        422,
        "body.settings.op25b_ports.0",
    ),
    ("PATCH", "/v1/gateways/gw-a", {"pools": ["nope"]}, "netops", 422, "body.pools.0"),
    ("PATCH", "/v1/gateways/gw-zz", {"pools": []}, "netops", 404, None),
    ("POST", "/v1/gateways", {"name": "gw-a"}, "netops", 409, None),
    (
        "POST",
        "/v1/pools",
        # Nested pools are fine (the most specific wins); the same prefix twice is not.
        {"name": "dup", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]},
        "netops",
        422,
        "body.prefixes",
    ),
    (
        "POST",
        "/v1/pools",
        {"name": "dyn_a", "kind": "static", "prefixes": ["10.9.0.0/16"]},
        "netops",
        409,
        None,
    ),
    (
        "POST",
        "/v1/pools",
        {"name": "hb", "kind": "static", "prefixes": ["10.0.0.1/8"]},
        "netops",
        422,
        "body.prefixes.0",
    ),
    (
        "POST",
        "/v1/pools",
        {"name": "v6", "kind": "dynamic", "prefixes": ["2001:db8:c000::/36"]},
        "netops",
        422,
        "body.subscriber_prefix_len",
    ),
    (
        "POST",
        "/v1/pools",
        {"name": "rl", "kind": "static", "prefixes": ["10.9.0.0/16"], "rate_limit": "nope"},
        "netops",
        422,
        "body.rate_limit",
    ),
    (
        "POST",
        "/v1/pools",
        {"name": "Bad Name", "kind": "static", "prefixes": ["10.9.0.0/16"]},
        "netops",
        422,
        "body.name",
    ),
    (
        "POST",
        "/v1/pools",
        {"name": "x", "kind": "static", "prefixes": ["10.9.0.0/16"], "extra": 1},
        "netops",
        422,
        "body.extra",
    ),
    ("DELETE", "/v1/pools/dyn_a", None, "netops", 409, None),
    ("DELETE", "/v1/rate-limits/residential", None, "netops", 409, None),
    (
        "POST",
        "/v1/relays",
        {"name": "inside", "prefixes": ["100.64.3.3"]},
        "netops",
        422,
        "body.prefixes.0",
    ),
    ("PUT", "/v1/accounts/zed/session", {"ipv4": "100.64.0.0/24"}, "netops", 422, "body.ipv4"),
    ("PUT", "/v1/accounts/zed/session", {"ipv6": "2001:db8:a000::/48"}, "netops", 422, "body.ipv6"),
    (
        "PUT",
        "/v1/accounts/zed/session",
        {"ipv6": "2001:db8:a000::1/128"},
        "netops",
        422,
        "body.ipv6",
    ),
    ("PUT", "/v1/accounts/zed/session", {"ipv4": "300.1.1.1"}, "netops", 422, "body.ipv4"),
    ("DELETE", "/v1/accounts/nobody/session", None, "netops", 404, None),
    (
        "POST",
        "/v1/sessions/bulk",
        {
            "bindings": [
                {"account": "ok1", "ipv4": "100.64.1.1"},
                {"account": "ok2", "ipv4": "bogus"},
            ]
        },
        "netops",
        422,
        "body.bindings.1.ipv4",
    ),
    (
        "POST",
        "/v1/sessions/bulk",
        {
            "bindings": [
                {"account": "d1", "ipv4": "100.64.1.1"},
                {"account": "d2", "ipv4": "100.64.1.1"},
            ]
        },
        "netops",
        422,
        "body.bindings.1.ipv4",
    ),
    ("POST", "/v1/exemptions", {"account": "x", "reason": "r"}, "abuse", 422, "body.ticket"),
    (
        "POST",
        "/v1/exemptions",
        {"account": "relay_box", "ticket": "T", "reason": "r"},
        "abuse",
        422,
        "body.account",
    ),
    ("GET", "/v1/pools/nope", None, "viewer", 404, None),
    ("GET", "/v1/pools/a%00b", None, "viewer", 422, "path.name"),
    ("GET", "/v1/accounts/a%00b", None, "viewer", 422, "path.account"),
    ("GET", "/v1/gateways/gw%00/desired-state", None, "viewer", 422, "path.name"),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "x", "reason": "a\u0000b"},
        "abuse",
        422,
        "body.reason",
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "x", "ticket": "T\n1"},
        "abuse",
        422,
        "body.ticket",
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "prefix": "1.2.3.4/\u0661"},
        "abuse",
        422,
        "body.prefix",
    ),
    (
        "POST",
        "/v1/quarantines",
        {**QUARANTINE, "account": "x", "expires": "9999-12-31T23:59:59-14:00"},
        "abuse",
        422,
        "body.expires",
    ),
    ("GET", "/v1/audit?since=9999-12-31T23:59:59-14:00", None, "viewer", 422, "query.since"),
    ("GET", "/v1/quarantines", None, "viewer", 200, None),
    ("GET", "/v1/quarantines?state=bogus", None, "viewer", 422, "query.state"),
    ("GET", "/v1/gateways/gw-a/desired-state?since=-1", None, "viewer", 422, "query.since"),
    ("GET", "/v1/gateways/gw-a/desired-state?wait=nan", None, "viewer", 422, "query.wait"),
]


@pytest.fixture
def prepared(api: Api, world: World) -> Api:
    # relay_box sits on the relay's address: quarantining it must be refused.
    api.put("/v1/pools/biz", {"kind": "static", "prefixes": ["203.0.113.0/24", "198.51.100.0/24"]})
    api.put("/v1/accounts/relay_box/session", {"ipv4": "198.51.100.25"})
    api.put("/v1/accounts/bert/session", {"ipv4": "100.65.0.9"})  # gw-b has no walled garden
    return api


def test_rejections_name_the_field_and_change_nothing(prepared: Api) -> None:
    api = prepared
    for method, path, body, role, status, field in REJECTED:
        before = fingerprint(api)
        response = api.call(method, path, role=role, json=body)
        assert response.status_code == status, (method, path, body, response.text)
        if status >= 400:
            assert fingerprint(api) == before, (method, path, "changed the store")
            if field is not None:
                assert field_of(response) == field, (path, body, response.text)


def test_malformed_bodies_never_500(prepared: Api) -> None:
    api = prepared
    before = fingerprint(api)
    bodies: list[Any] = [
        b"{not json",
        b"[]",
        b"null",
        b'"text"',
        b'{"account": 1, "mode": "smtp", "reason": "x"}',
        b'{"account": "\\u0000", "mode": "smtp", "reason": "x"}',
        b'{"account": "a", "mode": "smtp", "reason": "x", "duration": 1e309}',
        b'{"account": "a", "mode": "smtp", "reason": "x", "duration": -5}',
        '{"account": "\udcff"}'.encode("utf-8", "surrogatepass"),
    ]
    for path in ("/v1/quarantines", "/v1/pools", "/v1/sessions/bulk", "/v1/gateways"):
        for body in bodies:
            response = api.call(
                "POST", path, content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code in (400, 422), (path, body, response.text)
    assert fingerprint(api) == before


def test_conflicting_lift_is_409_and_changes_nothing(api: Api, world: World) -> None:
    made = api.post("/v1/quarantines", {**QUARANTINE, "account": "alice"}, role="abuse")
    path = f"/v1/quarantines/{made['quarantine']['id']}/lift"
    api.call("POST", path, role="abuse", json={"reason": "done"}, expect=200)
    before = fingerprint(api)
    response = api.call("POST", path, role="abuse", json={"reason": "again"}, expect=409)
    assert "lifted" in response.json()["detail"]
    assert fingerprint(api) == before


def test_second_exemption_for_an_account_is_409(api: Api, world: World) -> None:
    body = {"account": "shop", "ticket": "T", "reason": "MTA"}
    api.post("/v1/exemptions", body, role="abuse")
    before = fingerprint(api)
    api.call("POST", "/v1/exemptions", role="abuse", json=body, expect=409)
    assert fingerprint(api) == before
