"""JSON types are taken as sent: a string is not a number, 5.0 is not an
integer, "yes" is not true (issue 9, item 9).  Times stay RFC 3339 strings."""

from __future__ import annotations

import inspect
from typing import Any

import pydantic
from ctl_support import Api, World

from edgectl.controller.api import models

HOLD = {"account": "cust-1", "mode": "smtp", "reason": "spam"}
POOL = {"name": "dyn_x", "kind": "dynamic", "prefixes": ["100.66.0.0/16"]}
PROFILE = {"name": "p", "new_per_minute": 10, "burst": 5}
ENTRY = {
    "key": "100.64.0.1",
    "kind": "op25b",
    "policy": "dyn_a",
    "shadow": False,
    "count": 3,
    "first_seen": "2026-03-01T12:00:00Z",
    "last_seen": "2026-03-01T14:04:10+02:00",
}
OFFENDERS = {"available": True, "window_seconds": 300, "entries": [ENTRY]}

# (method, path, body, role, field the 422 names)
COERCED: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("POST", "/v1/quarantines", {**HOLD, "duration": "3600"}, "abuse", "body.duration"),
    ("POST", "/v1/quarantines", {**HOLD, "duration": 3600.0}, "abuse", "body.duration"),
    ("POST", "/v1/quarantines", {**HOLD, "expires": 4102444800}, "abuse", "body.expires"),
    ("POST", "/v1/quarantines", {**HOLD, "account": 42}, "abuse", "body.account"),
    ("POST", "/v1/rate-limits", {**PROFILE, "burst": 5.0}, "netops", "body.burst"),
    ("POST", "/v1/rate-limits", {**PROFILE, "shadow": "yes"}, "netops", "body.shadow"),
    ("POST", "/v1/rate-limits", {**PROFILE, "shadow": 1}, "netops", "body.shadow"),
    ("POST", "/v1/pools", {**POOL, "op25b_shadow": "true"}, "netops", "body.op25b_shadow"),
    (
        "PATCH",
        "/v1/gateways/gw-b",
        {"settings": {"log_group": "7"}},
        "netops",
        "body.settings.log_group",
    ),
    (
        "PATCH",
        "/v1/gateways/gw-b",
        {"settings": {"track_non_mail": "false"}},
        "netops",
        "body.settings.track_non_mail",
    ),
    (
        "PATCH",
        "/v1/gateways/gw-b",
        {"settings": {"mail_ports": [25, "587"]}},
        "netops",
        "body.settings.mail_ports.1",
    ),
    (
        "POST",
        "/v1/gateways/gw-a/status",
        {"applied_revision": "0"},
        "agent",
        "body.applied_revision",
    ),
    (
        "POST",
        "/v1/gateways/gw-a/status",
        {"applied_revision": 0, "offenders": {**OFFENDERS, "window_seconds": "300"}},
        "agent",
        "body.offenders.window_seconds",
    ),
    (
        "POST",
        "/v1/gateways/gw-a/status",
        {"applied_revision": 0, "offenders": {**OFFENDERS, "entries": [{**ENTRY, "count": 3.0}]}},
        "agent",
        "body.offenders.entries.0.count",
    ),
    (
        "POST",
        "/v1/gateways/gw-a/status",
        {"applied_revision": 0, "offenders": {**OFFENDERS, "available": "yes"}},
        "agent",
        "body.offenders.available",
    ),
]


def test_wrong_json_types_are_422_naming_the_field(api: Api, world: World) -> None:
    api.tokens["agent"] = world.agent_a
    for method, path, body, role, field in COERCED:
        response = api.call(method, path, role=role, json=body)
        assert response.status_code == 422, (path, body, response.text)
        locations = [".".join(map(str, d["loc"])) for d in response.json()["detail"]]
        assert field in locations, (body, response.text)
    assert api.get("/v1/quarantines", role="viewer") == []
    assert api.get("/v1/rate-limits", role="viewer")[0]["name"] == "residential"
    assert api.get("/v1/gateways/gw-b")["settings"].get("log_group") is None
    assert api.get("/v1/gateways/gw-a")["status"] is None


def test_times_enums_and_right_types_still_pass(api: Api, world: World) -> None:
    api.put("/v1/accounts/cust-1/session", {"ipv4": "100.64.0.1"})
    hold = api.post("/v1/quarantines", {**HOLD, "expires": "2099-01-01T00:00:00+01:00"})
    assert hold["quarantine"]["expires_at"].startswith("2098-12-31T23:00:00")
    api.post("/v1/rate-limits", {**PROFILE, "shadow": True})
    report = {"applied_revision": 0, "detail": {"x": 1.5}, "offenders": OFFENDERS}
    api.post("/v1/gateways/gw-a/status", report, role=world.agent_a)
    api.post("/v1/gateways", {"name": "gw-c", "settings": {"hooks": ["output"]}})
    api.get("/v1/audit", role="viewer", params={"since": "2026-01-01T00:00:00Z"})


def test_every_request_model_is_strict() -> None:
    """A request model added later is strict too, or this names it."""
    request_models = [
        value
        for value in vars(models).values()
        if inspect.isclass(value)
        and issubclass(value, pydantic.BaseModel)
        and issubclass(value, models.Strict)
    ]
    assert len(request_models) > 10
    for model in request_models:
        assert model.model_config.get("strict") is True, model.__name__
        assert model.model_config.get("extra") == "forbid", model.__name__
