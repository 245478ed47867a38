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


def test_the_api_takes_every_field_of_the_models_settings() -> None:
    model_fields = {f.name for f in dataclasses.fields(GatewaySettings)}
    assert set(GatewaySettingsIn.model_fields) == model_fields
    assert set(EVERY_SETTING) == model_fields
    defaults = settings_to_data(GatewaySettings())
    assert all(EVERY_SETTING[name] != defaults.get(name) for name in EVERY_SETTING)


def test_every_setting_flows_into_the_desired_state(api: Api, world: World) -> None:
    api.post("/v1/gateways", {"name": "gw-c", "pools": ["biz"], "settings": EVERY_SETTING})
    state = api.get("/v1/gateways/gw-c/desired-state")["state"]
    assert state["settings"] == EVERY_SETTING
    assert api.get("/v1/gateways/gw-c")["settings"] == EVERY_SETTING


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
