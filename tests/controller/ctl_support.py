"""Test helpers shared by the controller's API tests."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from edgectl.controller.auth import Role
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store, tokens
from edgectl.testing.wait import wait_until


def settings_for(store: Store, **overrides: Any) -> Settings:
    return Settings(database_url=store.database.url, **{"poll_interval": 0.05, **overrides})


class Api:
    """A TestClient with one token per role; ``call`` asserts the status."""

    def __init__(self, client: TestClient, store: Store) -> None:
        self.client = client
        self.store = store
        self.tokens = {
            role.value: tokens.create(store, f"test-{role.value}", role)
            for role in (Role.VIEWER, Role.ABUSE, Role.NETOPS, Role.PORTAL)
        }

    def headers(self, role: str | None) -> dict[str, str]:
        if role is None:
            return {}
        token = self.tokens.get(role, role)  # a role name, or a raw token
        return {"Authorization": f"Bearer {token}"}

    def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "netops",
        expect: int | None = None,
        **kwargs: Any,
    ) -> Any:
        headers = {**self.headers(role), **kwargs.pop("headers", {})}
        response = self.client.request(method, path, headers=headers, **kwargs)
        if expect is not None:
            assert response.status_code == expect, (
                method,
                path,
                response.status_code,
                response.text,
            )
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, expect=kwargs.pop("expect", 200), **kwargs).json()

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        response = self.call("POST", path, json=body, expect=kwargs.pop("expect", None), **kwargs)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()

    def put(self, path: str, body: Any, **kwargs: Any) -> Any:
        response = self.call("PUT", path, json=body, **kwargs)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()


class World:
    """A small ISP: two gateways, each serving its own dynamic pool."""

    def __init__(self, api: Api) -> None:
        api.post("/v1/rate-limits", {"name": "residential", "new_per_minute": 30, "burst": 10})
        api.post(
            "/v1/pools",
            {
                "name": "dyn_a",
                "kind": "dynamic",
                "prefixes": ["100.64.0.0/16", "2001:db8:a000::/36"],
                "subscriber_prefix_len": 56,
                "rate_limit": "residential",
            },
        )
        api.post(
            "/v1/pools",
            {
                "name": "dyn_b",
                "kind": "dynamic",
                "prefixes": ["100.65.0.0/16", "2001:db8:b000::/36"],
                "subscriber_prefix_len": 64,
            },
        )
        api.post("/v1/pools", {"name": "biz", "kind": "static", "prefixes": ["203.0.113.0/24"]})
        api.post(
            "/v1/pools", {"name": "infra", "kind": "infrastructure", "prefixes": ["192.0.2.0/24"]}
        )
        api.post("/v1/relays", {"name": "mx", "prefixes": ["198.51.100.25"]})
        garden = {"resolvers": ["192.0.2.53"], "portal": ["192.0.2.80"]}
        self.agent_a = api.post(
            "/v1/gateways", {"name": "gw-a", "pools": ["dyn_a", "biz"], "settings": garden}
        )["agent_token"]
        self.agent_b = api.post("/v1/gateways", {"name": "gw-b", "pools": ["dyn_b"]})["agent_token"]


def wait_until_parked(api: Api) -> None:
    """Until a long-poll waits on the notifier (so the test proves the wake-up)."""
    notifier = api.client.app.state.notifier  # type: ignore[attr-defined]
    wait_until(notifier.parked, timeout=10, what="the long-poll never parked", interval=0.01)
