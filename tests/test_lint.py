"""Lint refuses what an operator would regret, naming the item."""

from __future__ import annotations

from typing import Any

import pytest

from edgectl.model import Prefix, lint, state_from_data


def _paths(data: dict[str, Any]) -> list[str]:
    return [problem.path for problem in lint(state_from_data(data))]


def test_the_example_policy_is_clean(policy_data: dict[str, Any]) -> None:
    assert _paths(policy_data) == []


@pytest.mark.parametrize("port", [587, 465])
def test_op25b_never_blocks_submission(policy_data: dict[str, Any], port: int) -> None:
    policy_data["settings"]["op25b_ports"] = [25, port]
    assert _paths(policy_data) == ["settings.op25b_ports[1]"]


def test_relay_inside_dynamic_pool(policy_data: dict[str, Any]) -> None:
    policy_data["relays"].append({"name": "rogue", "prefixes": ["100.64.5.5"]})
    assert _paths(policy_data) == ["relays[rogue].prefixes[0]"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("0.0.0.0/0", "every subscriber"),
        ("::/0", "every subscriber"),
        ("198.51.100.25", "must never be held"),
        ("198.51.100.0/26", "covers pools[servers]"),
        ("2001:db8:1000:100::/80", "longer than /64"),
    ],
)
def test_quarantine_guard_rails(policy_data: dict[str, Any], key: str, reason: str) -> None:
    policy_data["quarantines"].append({"key": key, "mode": "block"})
    problems = lint(state_from_data(policy_data))
    assert [p.path for p in problems] == [f"quarantines[{Prefix.parse(key)}]"]
    assert reason in problems[0].reason


def test_quarantine_of_a_relay_outside_infrastructure(policy_data: dict[str, Any]) -> None:
    policy_data["relays"].append({"name": "partner", "prefixes": ["192.0.2.25"]})
    policy_data["quarantines"].append({"key": "192.0.2.25", "mode": "smtp"})
    problems = lint(state_from_data(policy_data))
    assert [p.path for p in problems] == ["quarantines[192.0.2.25]"]
    assert "relays[partner]" in problems[0].reason


def test_nested_pools_are_fine_exact_duplicates_are_not(policy_data: dict[str, Any]) -> None:
    # A static /24 carved out of a dynamic pool: the most specific one wins.
    policy_data["pools"].append({"name": "biz", "kind": "static", "prefixes": ["100.64.8.0/24"]})
    assert _paths(policy_data) == []
    policy_data["pools"].append({"name": "dup", "kind": "static", "prefixes": ["100.64.8.0/24"]})
    problems = lint(state_from_data(policy_data))
    assert [p.path for p in problems] == ["pools[dup]"]
    assert "also in pools[biz]" in problems[0].reason


def test_nested_pools_decide_relays_and_exemptions_by_the_most_specific(
    policy_data: dict[str, Any],
) -> None:
    policy_data["pools"].append({"name": "biz", "kind": "static", "prefixes": ["100.64.8.0/24"]})
    # A relay in the static /24 is not in dynamic space, though the /24 is inside a dynamic pool.
    policy_data["relays"].append({"name": "biz_mx", "prefixes": ["100.64.8.25"]})
    # An exemption there exempts nothing: OP25B does not apply to a static pool.
    policy_data["exemptions"].append({"key": "100.64.8.7"})
    assert _paths(policy_data) == ["exemptions[100.64.8.7]"]


def test_unknown_profile(policy_data: dict[str, Any]) -> None:
    policy_data["pools"][0]["rate_limit"] = "nope"
    assert _paths(policy_data) == ["pools[home_v4].rate_limit"]


def test_exemption_outside_dynamic_space(policy_data: dict[str, Any]) -> None:
    policy_data["exemptions"].append({"key": "100.65.0.9"})
    assert _paths(policy_data) == ["exemptions[100.65.0.9]"]


def test_walled_garden_needs_resolvers_and_portal(policy_data: dict[str, Any]) -> None:
    del policy_data["settings"]["portal"]
    assert _paths(policy_data) == ["quarantines[100.64.9.0/24].mode"]


def test_every_problem_is_reported_at_once(policy_data: dict[str, Any]) -> None:
    policy_data["settings"]["op25b_ports"] = [25, 587]
    policy_data["quarantines"].append({"key": "0.0.0.0/0", "mode": "block"})
    assert len(_paths(policy_data)) == 2
