"""Every setting the dataplane takes is reachable through the API and reaches
the agent's desired state (issue 9, item 3)."""

from __future__ import annotations

import dataclasses

from ctl_support import Api, World

from edgectl.controller.api.models import GatewaySettingsIn
from edgectl.model import GatewaySettings
from edgectl.model.serial import settings_to_data

# Each value differs from the model's default, so none can pass by accident.
EVERY_SETTING = {
    "hooks": ["forward", "output"],
    "block_action": "drop",
    "mail_ports": [25, 465, 587, 2525],
    "op25b_ports": [25, 2525],
    "log_group": 7,
    "log_per_second": 50,
    "resolvers": ["192.0.2.53", "2001:db8:53::/48"],
    "portal": ["192.0.2.80"],
    "meter_size": 131072,
    "track_non_mail": False,
}
# Steering HTTP to the portal needs conntrack (NAT), so it cannot share a
# gateway with track_non_mail = false: its fields get a document of their own.
STEERING = {
    "portal": ["192.0.2.80", "2001:db8:80::/64"],
    "steer_http_4": "192.0.2.80",
    "steer_http_6": "2001:db8:80::8",
    "steer_http_port": 8080,
    "garden_allow": [
        {"prefix": "203.0.113.0/28", "ports": [80, 443]},
        {"prefix": "2001:db8:aa::/48", "ports": [443]},
    ],
}


def test_the_api_takes_every_field_of_the_models_settings() -> None:
    model_fields = {f.name for f in dataclasses.fields(GatewaySettings)}
    assert set(GatewaySettingsIn.model_fields) == model_fields
    assert set(EVERY_SETTING) | set(STEERING) == model_fields
    defaults = settings_to_data(GatewaySettings())
    assert all(EVERY_SETTING[name] != defaults.get(name) for name in EVERY_SETTING)
    assert all(STEERING[name] != defaults.get(name) for name in STEERING)


def test_every_setting_flows_into_the_desired_state(api: Api, world: World) -> None:
    api.post("/v1/gateways", {"name": "gw-c", "pools": ["biz"], "settings": EVERY_SETTING})
    state = api.get("/v1/gateways/gw-c/desired-state")["state"]
    assert state["settings"] == EVERY_SETTING
    assert api.get("/v1/gateways/gw-c")["settings"] == EVERY_SETTING


def test_steering_settings_flow_into_the_desired_state(api: Api, world: World) -> None:
    api.post("/v1/gateways", {"name": "gw-c", "pools": ["biz"], "settings": STEERING})
    served = api.get("/v1/gateways/gw-c/desired-state")["state"]["settings"]
    assert {name: served[name] for name in STEERING} == STEERING


def test_steering_that_cannot_work_is_refused_naming_the_field(api: Api, world: World) -> None:
    """422 naming the field, and nothing stored."""
    refused = [
        ({"portal": ["192.0.2.80"], "steer_http_4": "192.0.2.81"}, "settings.steer_http_4"),
        ({"portal": ["192.0.2.0/24"], "steer_http_4": "192.0.2.0/28"}, "settings.steer_http_4"),
        (
            {"portal": ["192.0.2.80"], "steer_http_4": "192.0.2.80", "track_non_mail": False},
            "settings.steer_http_4",
        ),
        ({"garden_allow": [{"prefix": "0.0.0.0/0"}]}, "settings.garden_allow[0].prefix"),
        ({"garden_allow": [{"prefix": "203.0.113.0/28", "ports": [0]}]}, "ports"),
    ]
    for settings, field in refused:
        body = api.call(
            "POST", "/v1/gateways", json={"name": "gw-c", "settings": settings}, expect=422
        )
        assert field in body.text, (settings, body.text)
        api.call("GET", "/v1/gateways/gw-c", expect=404)


def test_track_non_mail_is_patched_and_served(api: Api, world: World) -> None:
    revision = api.get("/v1/gateways/gw-b/desired-state")["revision"]
    api.call("PATCH", "/v1/gateways/gw-b", json={"settings": {"track_non_mail": False}}, expect=200)
    served = api.get("/v1/gateways/gw-b/desired-state", params={"since": revision})
    assert served["kind"] == "delta"
    assert served["delta"]["structure"]["settings"]["track_non_mail"] is False
    snapshot = api.get("/v1/gateways/gw-b/desired-state")["state"]
    assert snapshot["settings"]["track_non_mail"] is False


def test_walled_garden_open_to_everything_is_refused(api: Api, world: World) -> None:
    """POST and PATCH, IPv4 and IPv6: 422 naming the entry, and nothing stored."""
    refused = [
        ("POST", "/v1/gateways", {"name": "gw-c", "settings": {"resolvers": ["0.0.0.0/0"]}}),
        ("POST", "/v1/gateways", {"name": "gw-c", "settings": {"portal": ["::/0"]}}),
        ("PATCH", "/v1/gateways/gw-b", {"settings": {"resolvers": ["::/0"], "portal": ["::1"]}}),
        ("PATCH", "/v1/gateways/gw-b", {"settings": {"portal": ["192.0.2.80", "0.0.0.0/0"]}}),
    ]
    expected = ["resolvers", 0], ["portal", 0], ["resolvers", 0], ["portal", 1]

    def gateways() -> list[tuple[str, object, int]]:
        return [(g["name"], g["settings"], g["revision"]) for g in api.get("/v1/gateways")]

    before = gateways()
    for (method, path, body), (field, index) in zip(refused, expected, strict=True):
        response = api.call(method, path, json=body, expect=422)
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "settings", field, index], response.text
        assert detail["field"] == f"settings.{field}[{index}]"
    assert gateways() == before
