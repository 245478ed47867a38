"""``edgectl catalogue check`` says in advance what the controller's API will say.

Each scenario is checked offline (against the controller's listings, as the
Ansible role passes them) and then replayed through the real API in the
role's order; the check must report a problem exactly when some call would
be refused, so a catalogue it passes is applied whole and one it refuses is
not started.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from ctl_support import Api, World

from edgectl.cli import main
from edgectl.controller.catalogue_check import KINDS, check

PATHS = {"rate_limits": "/v1/rate-limits", "relays": "/v1/relays", "pools": "/v1/pools"}


def current(api: Api) -> dict[str, Any]:
    return {kind: api.get(path) for kind, path in PATHS.items()}


def replay(api: Api, document: dict[str, Any]) -> list[tuple[str, int]]:
    """Apply ``document`` as the catalogue entry point does; the refused calls."""
    refused = []

    def wanted(kind: str, state: str) -> list[dict[str, Any]]:
        return [i for i in document.get(kind, []) if i.get("state", "present") == state]

    for kind in KINDS:
        for item in wanted(kind, "present"):
            body = {k: v for k, v in item.items() if k != "state"}
            path = f"{PATHS[kind]}/{item['name']}"
            exists = api.call("GET", path).status_code == 200
            if exists:
                body.pop("name")
                response = api.call("PUT", path, json=body)
            else:
                response = api.call("POST", PATHS[kind], json=body)
            if response.status_code >= 300:
                refused.append((item["name"], response.status_code))
    for kind in reversed(KINDS):
        for item in wanted(kind, "absent"):
            response = api.call("DELETE", f"{PATHS[kind]}/{item['name']}")
            if response.status_code >= 300 and response.status_code != 404:
                refused.append((item["name"], response.status_code))
    return refused


GOOD = {
    "rate_limits": [{"name": "home", "new_per_minute": 30, "burst": 10, "concurrent": 10}],
    "relays": [{"name": "isp_smtp", "prefixes": ["198.51.100.26/32"]}],
    "pools": [
        {"name": "dyn_c", "kind": "dynamic", "prefixes": ["100.66.0.0/16"], "rate_limit": "home"},
        {
            "name": "dyn_c6",
            "kind": "dynamic",
            "prefixes": ["2001:db8:c000::/36"],
            "subscriber_prefix_len": 56,
            "op25b_shadow": True,
        },
    ],
}


def _with(**changes: list[dict[str, Any]]) -> dict[str, Any]:
    return {**GOOD, **changes}


SCENARIOS: dict[str, tuple[dict[str, Any], str | None]] = {
    "good": (GOOD, None),
    "unknown kind": (
        _with(pools=[{"name": "dyn_c", "kind": "dynamik", "prefixes": ["100.66.0.0/16"]}]),
        "pools[0] (dyn_c).kind",
    ),
    "host bits": (
        _with(pools=[*GOOD["pools"], {"name": "x", "kind": "static", "prefixes": ["100.67.0.1/24"]}]),  # noqa: E501
        "pools[2] (x).prefixes[0]",
    ),
    # An exact duplicate stays an error when nested pools become legal.
    "duplicate of a pool the controller holds": (
        _with(pools=[{"name": "copy", "kind": "static", "prefixes": ["100.64.0.0/16"]}]),
        "pools[0] (copy)",
    ),
    "relay in dynamic space": (
        _with(relays=[{"name": "inside", "prefixes": ["100.65.0.25/32"]}]),
        "relays[0] (inside)",
    ),
    "missing profile": (
        _with(pools=[{"name": "p", "kind": "dynamic", "prefixes": ["100.66.0.0/16"], "rate_limit": "x"}]),  # noqa: E501
        "pools[0] (p).rate_limit",
    ),
    "delete a profile a remaining pool uses": (
        _with(rate_limits=[{"name": "residential", "state": "absent"}]),
        "rate_limits[0] (residential)",
    ),
    "delete a pool a gateway serves": (
        _with(pools=[{"name": "dyn_b", "state": "absent"}]),
        "pools[0] (dyn_b)",
    ),
    "delete a pool and then its profile": (
        _with(
            pools=[{"name": "dyn_a", "state": "absent"}],
            rate_limits=[{"name": "residential", "state": "absent"}],
        ),
        "pools[0] (dyn_a)",  # dyn_a is served by gw-a: the pool cannot go
    ),
    "replace a pool's profile, then delete the old profile": (
        _with(
            rate_limits=[
                {"name": "home", "new_per_minute": 30, "burst": 10},
                {"name": "residential", "state": "absent"},
            ],
            pools=[
                {
                    "name": "dyn_a",
                    "kind": "dynamic",
                    "prefixes": ["100.64.0.0/16", "2001:db8:a000::/36"],
                    "subscriber_prefix_len": 56,
                    "rate_limit": "home",
                }
            ],
        ),
        None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_check_agrees_with_the_api(api: Api, world: World, scenario: str) -> None:
    document, where = SCENARIOS[scenario]
    problems = check({**document, "current": current(api)})
    refused = replay(api, document)
    if where is None:
        assert problems == [] and refused == [], (problems, refused)
    else:
        assert refused, f"the API accepted what the check refuses: {problems}"
        assert any(p.path.startswith(where) for p in problems), problems


def test_every_problem_is_listed_and_names_the_item() -> None:
    document = {
        "rate_limits": [{"name": "r", "new_per_minute": 0, "burst": 1}],
        "relays": [{"name": "x", "prefixes": ["nonsense"]}],
        "pools": [
            {"name": "a", "kind": "dynamic", "prefixes": ["10.0.0.0/8"]},
            {"name": "b", "kind": "static", "prefixes": ["10.0.0.0/8"]},
            {"name": "a", "kind": "dynamic", "prefixes": ["10.0.0.0/8"]},
            {"name": "c", "state": "gone"},
        ],
    }
    paths = [p.path for p in check(document)]
    assert paths == [
        "pools[2] (a).name",
        "pools[3] (c).state",
        "rate_limits[0] (r).new_per_minute",
        "relays[0] (x).prefixes[0]",
        "pools[1] (b).prefixes",
    ], paths


def test_the_cli_exits_2_listing_problems_and_0_when_clean(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"pools": [{"name": "a", "kind": "dynamic", "prefixes": ["10.0.0.1/8"]}]})
    )
    assert main(["catalogue", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "pools[0] (a).prefixes[0]: '10.0.0.1/8' has host bits set" in err
    assert "nothing was changed" in err
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    assert main(["catalogue", "check", str(good)]) == 0
    assert capsys.readouterr().out == "catalogue ok: 1 rate-limits, 1 relays, 2 pools\n"
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert main(["catalogue", "check", str(garbage)]) == 2
    assert "cannot read" in capsys.readouterr().err


NESTED = {
    # A static /24 inside the dynamic /16 the controller holds (dyn_a): legal
    # once nested pools are (issue 9, item 4), refused before. The check uses
    # the model's lint, so it must agree with the API either way.
    "static inside dynamic": [{"name": "biz_in", "kind": "static", "prefixes": ["100.64.7.0/24"]}],
    "dynamic inside static": [
        {"name": "dyn_in", "kind": "dynamic", "prefixes": ["203.0.113.128/25"]}
    ],
}  # fmt: skip


@pytest.mark.parametrize("scenario", NESTED)
def test_check_agrees_with_the_api_on_nested_pools(api: Api, world: World, scenario: str) -> None:
    document = {"pools": NESTED[scenario]}
    problems = check({**document, "current": current(api)})
    refused = replay(api, document)
    assert bool(problems) == bool(refused), (problems, refused)
