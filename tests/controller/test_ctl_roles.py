"""Role matrix: every endpoint x every role gives the expected status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from ctl_support import Api, World, settings_for

from edgectl.controller.auth import Role
from edgectl.controller.escalation import engine
from edgectl.controller.store import tokens as store_tokens

READ = {"viewer", "abuse", "netops"}
HOLD = {"abuse", "netops"}
NETOPS = {"netops"}
READ_AGENT = READ | {"agent"}
AGENT = {"agent"}
REPORT = {"abuse", "netops", "reporter"}
PORTAL = {"portal"}
ROLES = ("viewer", "abuse", "netops", "agent", "reporter", "portal")

Body = Callable[[str, dict[str, Any]], Any]


@dataclass(frozen=True)
class Endpoint:
    method: str
    route: str  # as FastAPI knows it, to check the matrix covers every route
    path: Callable[[str, dict[str, Any]], str]
    allowed: set[str]
    success: int
    body: Body | None = None


def fixed(text: str) -> Callable[[str, dict[str, Any]], str]:
    return lambda role, ctx: text


NET = {"viewer": 1, "abuse": 2, "netops": 3, "agent": 4, "reporter": 5, "portal": 6}

LADDER = {
    "strikes": [{"source": "report", "class": "spam"}],
    "steps": [{"strike": 1, "mode": "smtp", "duration": 3600}],
    "window": 86400,
}


def _xarf(ident: str, address: str, at: str) -> dict[str, Any]:
    return {
        "xarf_version": "4.0.0",
        "report_id": ident,
        "timestamp": at,
        "source_identifier": address,
        "category": "messaging",
        "type": "spam",
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()


ENDPOINTS = [
    Endpoint("GET", "/v1/pools", fixed("/v1/pools"), READ, 200),
    Endpoint(
        "POST",
        "/v1/pools",
        fixed("/v1/pools"),
        NETOPS,
        201,
        lambda r, c: {"name": f"p_{r}", "kind": "static", "prefixes": [f"10.{NET[r]}.0.0/16"]},
    ),
    Endpoint("GET", "/v1/pools/{name}", fixed("/v1/pools/biz"), READ, 200),
    Endpoint(
        "PUT",
        "/v1/pools/{name}",
        fixed("/v1/pools/biz"),
        NETOPS,
        200,
        lambda r, c: {"kind": "static", "prefixes": ["203.0.113.0/24"]},
    ),
    Endpoint("DELETE", "/v1/pools/{name}", lambda r, c: f"/v1/pools/p_{r}", NETOPS, 204),
    Endpoint("GET", "/v1/relays", fixed("/v1/relays"), READ, 200),
    Endpoint(
        "POST",
        "/v1/relays",
        fixed("/v1/relays"),
        NETOPS,
        201,
        lambda r, c: {"name": f"r_{r}", "prefixes": [f"198.18.{NET[r]}.1"]},
    ),
    Endpoint("GET", "/v1/relays/{name}", fixed("/v1/relays/mx"), READ, 200),
    Endpoint(
        "PUT",
        "/v1/relays/{name}",
        fixed("/v1/relays/mx"),
        NETOPS,
        200,
        lambda r, c: {"prefixes": ["198.51.100.25"]},
    ),
    Endpoint("DELETE", "/v1/relays/{name}", lambda r, c: f"/v1/relays/r_{r}", NETOPS, 204),
    Endpoint("GET", "/v1/rate-limits", fixed("/v1/rate-limits"), READ, 200),
    Endpoint(
        "POST",
        "/v1/rate-limits",
        fixed("/v1/rate-limits"),
        NETOPS,
        201,
        lambda r, c: {"name": f"rl_{r}", "new_per_minute": 5, "burst": 5},
    ),
    Endpoint("GET", "/v1/rate-limits/{name}", fixed("/v1/rate-limits/residential"), READ, 200),
    Endpoint(
        "PUT",
        "/v1/rate-limits/{name}",
        fixed("/v1/rate-limits/residential"),
        NETOPS,
        200,
        lambda r, c: {"new_per_minute": 30, "burst": 10},
    ),
    Endpoint(
        "DELETE", "/v1/rate-limits/{name}", lambda r, c: f"/v1/rate-limits/rl_{r}", NETOPS, 204
    ),
    Endpoint("GET", "/v1/gateways", fixed("/v1/gateways"), READ_AGENT, 200),
    Endpoint(
        "POST", "/v1/gateways", fixed("/v1/gateways"), NETOPS, 201, lambda r, c: {"name": f"gw-{r}"}
    ),
    Endpoint("GET", "/v1/gateways/{name}", fixed("/v1/gateways/gw-a"), READ_AGENT, 200),
    Endpoint(
        "PATCH",
        "/v1/gateways/{name}",
        fixed("/v1/gateways/gw-b"),
        NETOPS,
        200,
        lambda r, c: {"settings": {"log_per_second": 20}},
    ),
    Endpoint(
        "POST", "/v1/gateways/{name}/token", lambda r, c: f"/v1/gateways/gw-{r}/token", NETOPS, 200
    ),
    Endpoint(
        "GET",
        "/v1/gateways/{name}/desired-state",
        fixed("/v1/gateways/gw-a/desired-state"),
        READ_AGENT,
        200,
    ),
    Endpoint(
        "POST",
        "/v1/gateways/{name}/status",
        fixed("/v1/gateways/gw-a/status"),
        AGENT,
        200,
        lambda r, c: {"applied_revision": 1},
    ),
    Endpoint("DELETE", "/v1/gateways/{name}", lambda r, c: f"/v1/gateways/gw-{r}", NETOPS, 204),
    Endpoint("GET", "/v1/accounts", fixed("/v1/accounts?address=100.64.0.10"), READ, 200),
    Endpoint("GET", "/v1/accounts/{account}", fixed("/v1/accounts/alice"), READ, 200),
    Endpoint(
        "GET", "/v1/accounts/{account}/history", fixed("/v1/accounts/alice/history"), READ, 200
    ),
    Endpoint(
        "PUT",
        "/v1/accounts/{account}/session",
        lambda r, c: f"/v1/accounts/u_{r}/session",
        NETOPS,
        200,
        lambda r, c: {"ipv4": f"100.64.9.{NET[r]}"},
    ),
    Endpoint(
        "DELETE",
        "/v1/accounts/{account}/session",
        lambda r, c: f"/v1/accounts/u_{r}/session",
        NETOPS,
        204,
    ),
    Endpoint(
        "POST",
        "/v1/sessions/bulk",
        fixed("/v1/sessions/bulk"),
        NETOPS,
        200,
        lambda r, c: {"bindings": [{"account": f"b_{r}", "ipv4": f"100.64.8.{NET[r]}"}]},
    ),
    Endpoint(
        "POST",
        "/v1/quarantines",
        fixed("/v1/quarantines"),
        HOLD,
        201,
        lambda r, c: {"account": f"q_{r}", "mode": "smtp", "reason": "spam"},
    ),
    Endpoint(
        "POST",
        "/v1/quarantines/bulk",
        fixed("/v1/quarantines/bulk"),
        HOLD,
        200,
        lambda r, c: {"accounts": [f"qb_{r}", "alice"], "mode": "smtp", "reason": "botnet"},
    ),
    Endpoint("GET", "/v1/quarantines", fixed("/v1/quarantines"), READ, 200),
    Endpoint("GET", "/v1/quarantines/{ident}", lambda r, c: f"/v1/quarantines/{c['q']}", READ, 200),
    Endpoint(
        "POST",
        "/v1/quarantines/{ident}/lift",
        lambda r, c: f"/v1/quarantines/{c['lift_q'].get(r, c['q'])}/lift",
        HOLD,
        200,
        lambda r, c: {"reason": "resolved"},
    ),
    Endpoint(
        "POST",
        "/v1/exemptions",
        fixed("/v1/exemptions"),
        HOLD,
        201,
        lambda r, c: {"account": f"e_{r}", "ticket": "T-1", "reason": "own MTA"},
    ),
    Endpoint("GET", "/v1/exemptions", fixed("/v1/exemptions"), READ, 200),
    Endpoint("GET", "/v1/exemptions/{ident}", lambda r, c: f"/v1/exemptions/{c['e']}", READ, 200),
    Endpoint(
        "POST",
        "/v1/exemptions/{ident}/lift",
        lambda r, c: f"/v1/exemptions/{c['lift_e'].get(r, c['e'])}/lift",
        HOLD,
        200,
        lambda r, c: {"reason": "ticket closed"},
    ),
    Endpoint("GET", "/v1/portal/holds", fixed("/v1/portal/holds?address=100.64.0.10"), PORTAL, 200),
    Endpoint(
        "POST",
        "/v1/portal/notices",
        fixed("/v1/portal/notices"),
        PORTAL,
        200,
        lambda r, c: {"address": "100.64.0.10"},
    ),
    Endpoint(
        "POST",
        "/v1/portal/notices/batch",
        fixed("/v1/portal/notices/batch"),
        PORTAL,
        200,
        lambda r, c: {"notices": [{"address": "100.64.0.10"}, {"address": "100.64.0.99"}]},
    ),
    Endpoint(
        "POST",
        "/v1/portal/holds/{ident}/acknowledge",
        lambda r, c: f"/v1/portal/holds/{c['q']}/acknowledge",
        PORTAL,
        200,
        lambda r, c: {"address": "100.64.0.10", "code": c.get("code", "AAAAAA")},
    ),
    Endpoint("GET", "/v1/audit", fixed("/v1/audit"), READ, 200),
    Endpoint("GET", "/v1/offenders", fixed("/v1/offenders"), READ, 200),
    Endpoint("GET", "/metrics", fixed("/metrics"), READ, 200),
    Endpoint(
        "POST",
        "/v1/reports",
        fixed("/v1/reports"),
        REPORT,
        200,
        lambda r, c: _xarf(f"role-{r}", "100.64.0.10", _now()),
    ),
    Endpoint("GET", "/v1/reports", fixed("/v1/reports"), READ, 200),
    Endpoint("GET", "/v1/cases", fixed("/v1/cases"), READ, 200),
    Endpoint("GET", "/v1/cases/{ident}", lambda r, c: f"/v1/cases/{c['case']}", READ, 200),
    Endpoint("GET", "/v1/policies", fixed("/v1/policies"), READ, 200),
    Endpoint("GET", "/v1/policies/{name}", fixed("/v1/policies/base"), READ, 200),
    Endpoint(
        "PUT",
        "/v1/policies/{name}",
        lambda r, c: f"/v1/policies/p-{r}",
        NETOPS,
        201,
        lambda r, c: {"mode": "dry-run", **LADDER},
    ),
    Endpoint("DELETE", "/v1/policies/{name}", lambda r, c: f"/v1/policies/p-{r}", NETOPS, 204),
    Endpoint(
        "POST",
        "/v1/policies/{name}/replay",
        fixed("/v1/policies/base/replay"),
        HOLD,
        200,
        lambda r, c: {"since": "2026-01-01T00:00:00Z", "until": _now()},
    ),
    Endpoint("GET", "/v1/proposals", fixed("/v1/proposals"), READ, 200),
    Endpoint(
        "POST",
        "/v1/proposals/{ident}/approve",
        lambda r, c: f"/v1/proposals/{c['approve'].get(r, 1)}/approve",
        HOLD,
        200,
        lambda r, c: {"reason": "ok"},
    ),
    Endpoint(
        "POST",
        "/v1/proposals/{ident}/reject",
        lambda r, c: f"/v1/proposals/{c['reject'].get(r, 1)}/reject",
        HOLD,
        200,
        lambda r, c: {"reason": "no"},
    ),
    Endpoint(
        "POST",
        "/v1/proposals/decide",
        fixed("/v1/proposals/decide"),
        HOLD,
        200,
        lambda r, c: {"ids": [c["decide"].get(r, 1)], "decision": "reject", "reason": "no"},
    ),
]


def _context(api: Api) -> dict[str, Any]:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    q = api.post("/v1/quarantines", {"account": "alice", "mode": "smtp", "reason": "r"})
    e = api.post("/v1/exemptions", {"account": "alice", "ticket": "T", "reason": "r"})
    context: dict[str, Any] = {"q": q["quarantine"]["id"], "e": e["id"], "lift_q": {}, "lift_e": {}}
    notice = {"address": "100.64.0.10"}
    path = "/v1/portal/notices"
    context["code"] = api.call("POST", path, role="portal", json=notice, expect=200).json()["code"]
    for role in sorted(HOLD):
        made = api.post("/v1/quarantines", {"account": f"l_{role}", "mode": "smtp", "reason": "r"})
        context["lift_q"][role] = made["quarantine"]["id"]
        made = api.post("/v1/exemptions", {"account": f"l_{role}", "ticket": "T", "reason": "r"})
        context["lift_e"][role] = made["id"]
    # A case (alice's spam), and pending proposals for each role to decide.
    api.post("/v1/reports", _xarf("ctx", "100.64.0.10", _now()))
    context["case"] = api.get("/v1/cases")[0]["id"]
    api.put("/v1/policies/base", {"mode": "propose", **LADDER})
    for n in range(len(HOLD) * 3):
        api.put(f"/v1/accounts/pr_{n}/session", {"ipv4": f"100.64.7.{n + 1}"})
        api.post("/v1/reports", _xarf(f"pr-{n}", f"100.64.7.{n + 1}", _now()))
    engine.run_once(api.store, settings_for(api.store))
    pending = [p["id"] for p in api.get("/v1/proposals")]
    assert len(pending) == 6
    for kind in ("approve", "reject", "decide"):
        context[kind] = {role: pending.pop() for role in sorted(HOLD)}
    return context


def test_matrix_covers_every_route(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    routes = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/v1") or path == "/metrics"
        for method in operations
    }
    assert routes == {(e.method, e.route) for e in ENDPOINTS}


def test_role_matrix(api: Api, world: World) -> None:
    context = _context(api)
    tokens = {
        **api.tokens,
        "agent": world.agent_a,
        "reporter": store_tokens.create(api.store, "relay", Role.REPORTER),
    }
    got: dict[tuple[str, str, str], int] = {}
    wanted: dict[tuple[str, str, str], int] = {}
    for role in ROLES:
        for endpoint in ENDPOINTS:
            body = None if endpoint.body is None else endpoint.body(role, context)
            response = api.call(
                endpoint.method, endpoint.path(role, context), role=tokens[role], json=body
            )
            key = (role, endpoint.method, endpoint.route)
            got[key] = response.status_code
            wanted[key] = endpoint.success if role in endpoint.allowed else 403
    assert {k: v for k, v in got.items() if wanted[k] != v} == {}


@pytest.mark.parametrize("token", [None, "edg_not-a-token", "x" * 300])
def test_no_or_bad_token_is_401(api: Api, world: World, token: str | None) -> None:
    context = {"q": 1, "e": 1, "lift_q": {}, "lift_e": {}, "case": 1}
    context.update({"approve": {}, "reject": {}, "decide": {}})
    for endpoint in ENDPOINTS:
        body = None if endpoint.body is None else endpoint.body("netops", context)
        response = api.call(
            endpoint.method, endpoint.path("netops", context), role=token, json=body
        )
        assert response.status_code == 401, (endpoint.method, endpoint.route, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


def test_nobody_can_delete_the_audit_log(api: Api, world: World) -> None:
    before = len(api.get("/v1/audit", params={"limit": 1000}))
    for role in ("viewer", "abuse", "netops"):
        assert api.call("DELETE", "/v1/audit", role=role).status_code == 405
        assert api.call("DELETE", "/v1/audit/1", role=role).status_code == 404
        assert api.call("PUT", "/v1/audit", role=role, json={}).status_code == 405
    assert len(api.get("/v1/audit", params={"limit": 1000})) == before
