"""One account-id alphabet on every route that takes an account, so an id
accepted anywhere is reachable at /v1/accounts/{account} (issue 9, item 12)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from ctl_support import Api, World

# RADIUS User-Name forms an ISP sends: plain, NAI with realm, MAC-based, +tags.
REACHABLE = ["cust-42", "user.name@isp.example", "00:11:22:aa:bb:cc", "a+b_c", "B2B-7"]
# A slash is a path separator (also as %2F); dots alone are dot-segments a
# client normalises away; the rest are not in the alphabet.
REFUSED = [
    "a/b",
    "..",
    ".hidden",
    "-x",
    "has space",
    "tab\there",
    "é",
    "a#b",
    "a?b",
    "a%b",
    "x" * 201,
]


def _routes(account: str) -> list[tuple[str, str, object, str, str]]:
    """(method, path, body, role, field) of every route that takes an account."""
    hold = {"mode": "smtp", "reason": "spam"}
    path = quote(account, safe="")
    return [
        ("POST", "/v1/quarantines", {**hold, "account": account}, "abuse", "body.account"),
        (
            "POST",
            "/v1/quarantines/bulk",
            {**hold, "accounts": [account]},
            "abuse",
            "body.accounts.0",
        ),
        (
            "POST",
            "/v1/exemptions",
            {"account": account, "ticket": "T-1", "reason": "MTA"},
            "abuse",
            "body.account",
        ),
        (
            "POST",
            "/v1/sessions/bulk",
            {"bindings": [{"account": account, "ipv4": "100.64.0.9"}]},
            "netops",
            "body.bindings.0.account",
        ),
        ("PUT", f"/v1/accounts/{path}/session", {"ipv4": "100.64.0.9"}, "netops", "path.account"),
        ("DELETE", f"/v1/accounts/{path}/session", None, "netops", "path.account"),
        ("GET", f"/v1/accounts/{path}", None, "viewer", "path.account"),
        ("GET", f"/v1/accounts/{path}/history", None, "viewer", "path.account"),
        ("GET", f"/v1/quarantines?account={path}", None, "viewer", "query.account"),
        ("GET", f"/v1/exemptions?account={path}", None, "viewer", "query.account"),
    ]


@pytest.mark.parametrize("account", REFUSED)
def test_ids_outside_the_alphabet_are_refused_everywhere(
    api: Api, world: World, account: str
) -> None:
    for method, path, body, role, field in _routes(account):
        response = api.call(method, path, role=role, json=body)
        if account in ("a/b", "..") and field == "path.account":
            # Never reaches the account routes at all: not found, not served.
            assert response.status_code in (404, 405, 422), (path, response.text)
            continue
        assert response.status_code == 422, (method, path, response.text)
        locations = [".".join(map(str, d["loc"])) for d in response.json()["detail"]]
        assert field in locations, (path, response.text)
    assert api.get("/v1/quarantines", role="viewer") == []
    assert api.get("/v1/exemptions", role="viewer") == []


@pytest.mark.parametrize("account", REACHABLE)
def test_every_accepted_id_is_reachable(api: Api, world: World, account: str) -> None:
    for method, path, body, role, _ in _routes(account):
        response = api.call(method, path, role=role, json=body)
        assert response.status_code < 300, (method, path, response.text)
    view = api.get(f"/v1/accounts/{quote(account, safe='')}", role="viewer")
    assert view["account"] == account
    assert view["quarantine"]["account"] == account
    assert view["exemption"]["account"] == account
    history = api.get(f"/v1/accounts/{quote(account, safe='')}/history", role="viewer")
    assert len(history["quarantines"]) == 1


def test_every_account_in_the_openapi_schema_has_the_one_pattern(api: Api) -> None:
    """Clients (and schemathesis) see the alphabet; a route added later without it fails."""
    schema = api.client.get("/openapi.json").json()
    found: dict[str, str | None] = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "account":
                    found[f"{method} {path}"] = _pattern(parameter["schema"])
    for name, model in schema["components"]["schemas"].items():
        if name.endswith("Public") or name in ("AccountHolder", "AccountHistory", "Resolved"):
            continue  # responses show what is stored
        for prop in ("account", "accounts"):
            if prop in model.get("properties", {}):
                found[f"{name}.{prop}"] = _pattern(model["properties"][prop])
    assert len(found) >= 10, found
    assert set(found.values()) == {r"^[A-Za-z0-9][A-Za-z0-9._@+:-]{0,199}$"}, found


def _pattern(node: dict[str, Any]) -> str | None:
    """The string pattern of a schema, through ``anyOf`` (optional) and ``items`` (lists)."""
    for option in node.get("anyOf", [node]):
        inner = option.get("items", option)
        if inner.get("type") == "string":
            pattern = inner.get("pattern")
            return pattern if isinstance(pattern, str) else None
    return None
