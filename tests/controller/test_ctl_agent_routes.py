"""The agents' own path (api/agent_routes.py): the same answers as the routes,
without their dependencies; everything else is the app's, refusals included."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from ctl_support import Api, World, wait_until_parked

from edgectl.controller.api import deps

VOLATILE = {"last_seen", "seconds_since_seen", "lag_seconds", "reported_at"}


@pytest.fixture
def routed(api: Api) -> Iterator[list[str]]:
    """The paths of the requests that went through the app's routes (their
    dependencies resolved a principal); those on the agents' path do not."""
    seen: list[str] = []
    app: Any = api.client.app

    async def counting(request: Any, credentials: Any = None) -> Any:
        seen.append(request.url.path)
        return await deps.get_principal(request, credentials)

    # The same parameters (so the same dependencies), resolved here.
    counting.__signature__ = inspect.signature(deps.get_principal, eval_str=True)  # type: ignore[attr-defined]
    app.dependency_overrides[deps.get_principal] = counting
    yield seen
    app.dependency_overrides.clear()


def hold(api: Api, account: str) -> None:
    body = {"account": account, "mode": "smtp", "reason": "spam"}
    api.post("/v1/quarantines", body, role="abuse")


def agent(api: Api, token: str, method: str, path: str, **kwargs: Any) -> Any:
    return api.call(method, path, role=token, **kwargs)


def warm(api: Api, token: str, gateway: str) -> int:
    """One request through the app: the agent's token is in the cache from then on."""
    return int(agent(api, token, "GET", f"/v1/gateways/{gateway}", expect=200).json()["revision"])


def stripped(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stripped(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stripped(v) for v in value]
    return value


def test_the_agent_path_answers_as_the_route(api: Api, world: World, routed: list[str]) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    revision = warm(api, world.agent_a, "gw-a")
    hold(api, "alice")
    routed.clear()
    path = "/v1/gateways/gw-a/desired-state"
    mine = agent(api, world.agent_a, "GET", path, expect=200)
    theirs = api.call("GET", path, role="viewer", expect=200)  # a reader: the route
    assert routed == [path]  # the viewer's only
    assert mine.json() == theirs.json() and mine.json()["kind"] == "snapshot"
    assert mine.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    assert mine.headers["cache-control"] == "no-store"  # the outer middlewares still apply
    delta = agent(api, world.agent_a, "GET", f"{path}?since={revision}&wait=0", expect=200)
    assert delta.json() == api.get(f"{path}?since={revision}", role="viewer")
    assert delta.json()["kind"] == "delta" and delta.json()["revision"] > revision
    assert "100.64.0.10" in delta.text
    assert routed == [path, path]

    current = delta.json()["revision"]
    routed.clear()
    body = {"applied_revision": current, "detail": {"nft": "ok"}}
    mine = agent(api, world.agent_a, "POST", "/v1/gateways/gw-a/status", json=body, expect=200)
    assert routed == []
    theirs = api.get("/v1/gateways/gw-a", role="viewer")
    assert stripped(mine.json()) == stripped(theirs)
    assert mine.json()["convergence"]["applied_revision"] == current
    assert mine.json()["convergence"]["converged"] is True


def test_a_parked_agent_long_poll_is_woken(api: Api, world: World, routed: list[str]) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    revision = warm(api, world.agent_a, "gw-a")
    routed.clear()
    answers: list[Any] = []
    path = f"/v1/gateways/gw-a/desired-state?since={revision}&wait=20"
    waiting = threading.Thread(
        target=lambda: answers.append(agent(api, world.agent_a, "GET", path, expect=200))
    )
    waiting.start()
    wait_until_parked(api)
    hold(api, "alice")
    waiting.join(20)
    assert answers and answers[0].json()["revision"] > revision
    assert [p for p in routed if "desired-state" in p] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("since=-1", "since"), ("since=x", "since"), ("wait=9999", "wait"), ("epoch=XYZ", "epoch")],
)
def test_parameters_the_path_does_not_parse_are_the_apps_to_refuse(
    api: Api, world: World, routed: list[str], query: str, field: str
) -> None:
    warm(api, world.agent_a, "gw-a")
    path = "/v1/gateways/gw-a/desired-state"
    refused = agent(api, world.agent_a, "GET", f"{path}?{query}", expect=422)
    assert refused.json()["detail"][0]["loc"] == ["query", field]
    assert path in routed


def test_other_gateways_and_other_callers_are_the_apps(
    api: Api, world: World, routed: list[str]
) -> None:
    warm(api, world.agent_a, "gw-a")
    routed.clear()
    other = "/v1/gateways/gw-b/desired-state"
    assert agent(api, world.agent_a, "GET", other, expect=403).json()["detail"]
    report = {"applied_revision": 1}
    assert agent(api, world.agent_a, "POST", "/v1/gateways/gw-b/status", json=report, expect=403)
    assert agent(api, "not-a-token", "GET", other, expect=401).json()["detail"]
    assert routed == [other, "/v1/gateways/gw-b/status", other]


def test_reports_the_model_or_the_store_refuses_are_the_apps(
    api: Api, world: World, routed: list[str]
) -> None:
    revision = warm(api, world.agent_a, "gw-a")
    routed.clear()
    status = "/v1/gateways/gw-a/status"
    unknown = agent(api, world.agent_a, "POST", status, json={"applied_revision": 1, "x": 1})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "x"]
    ahead = agent(api, world.agent_a, "POST", status, json={"applied_revision": revision + 5})
    assert ahead.status_code == 422
    assert ahead.json()["detail"][0]["field"] == "applied_revision"
    garbled = agent(
        api,
        world.agent_a,
        "POST",
        status,
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert garbled.status_code == 422  # the app's: it parses a body before the caller
    assert garbled.json()["detail"][0]["type"] == "json_invalid"
    assert routed == [status, status]  # each handed on, the body with it
    assert api.get("/v1/gateways/gw-a", role="viewer")["convergence"]["applied_revision"] is None


def test_a_report_with_offenders_on_the_agent_path(
    api: Api, world: World, routed: list[str]
) -> None:
    revision = warm(api, world.agent_a, "gw-a")
    routed.clear()
    offenders = {
        "available": True,
        "window_seconds": 300,
        "entries": [
            {
                "key": "100.64.0.7/32",
                "kind": "op25b",
                "policy": "dyn_a",
                "shadow": False,
                "count": 3,
                "first_seen": "2026-03-01T12:00:00+00:00",
                "last_seen": "2026-03-01T12:00:30+00:00",
            }
        ],
    }
    body = {"applied_revision": revision, "offenders": offenders}
    answer = agent(api, world.agent_a, "POST", "/v1/gateways/gw-a/status", json=body, expect=200)
    assert routed == []
    assert answer.json()["offenders"] is not None
    assert stripped(answer.json()) == stripped(api.get("/v1/gateways/gw-a", role="viewer"))
    assert api.get("/v1/offenders", role="viewer")[0]["key"] == "100.64.0.7"
