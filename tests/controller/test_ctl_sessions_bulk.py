"""POST /v1/sessions/bulk refusals: the field named, nothing applied."""

from __future__ import annotations

from typing import Any

import pytest
from ctl_support import Api, World


def _refused(api: Api, bindings: list[dict[str, Any]]) -> str:
    response = api.call("POST", "/v1/sessions/bulk", json={"bindings": bindings}, expect=422)
    [problem] = response.json()["detail"]
    return f"{problem['field']}: {problem['msg']}"


@pytest.mark.parametrize(
    ("bindings", "named"),
    [
        (
            [
                {"account": "a1", "ipv4": "100.64.0.1"},
                {"account": "a2", "ipv4": "100.64.0.2"},
                {"account": "a1", "ipv4": "100.64.0.3"},
            ],
            "bindings[2].account: also given in bindings[0]",
        ),
        (
            [
                {"account": "a1", "ipv4": "100.64.0.1"},
                {"account": "a2", "ipv4": "100.64.0.1"},
            ],
            "bindings[1].ipv4: also given in bindings[0]",
        ),
        (
            # The first duplicate in order is named, whichever field it is.
            [
                {"account": "a1", "ipv4": "100.64.0.1"},
                {"account": "a2", "ipv4": "100.64.0.2"},
                {"account": "a3", "ipv4": "100.64.0.2"},
                {"account": "a1", "ipv4": "100.64.0.4"},
            ],
            "bindings[2].ipv4: also given in bindings[1]",
        ),
        (
            [
                {"account": "a1", "ipv4": "100.64.0.1"},
                {"account": "a2", "ipv4": "100.64.0.0/24"},
            ],
            "bindings[1].ipv4: expected one IPv4 address",
        ),
    ],
)
def test_refused_bulk_names_the_binding_and_applies_nothing(
    api: Api, world: World, bindings: list[dict[str, Any]], named: str
) -> None:
    assert _refused(api, bindings) == named
    assert api.call("GET", "/v1/accounts/a1", expect=404).status_code == 404


def test_distinct_bindings_are_applied(api: Api, world: World) -> None:
    bindings = [{"account": f"a{n}", "ipv4": f"100.64.0.{n}"} for n in range(1, 4)]
    result = api.post("/v1/sessions/bulk", {"bindings": bindings})
    assert result == {"bindings": 3, "moved": 3, "displaced": 0}
    assert api.get("/v1/accounts/a2")["session"]["ipv4"] == "100.64.0.2"
