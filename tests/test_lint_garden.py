"""The walled garden stays a garden: its destinations are services, never the
internet (issue 9, item 8)."""

from __future__ import annotations

from typing import Any

import pytest

from edgectl.model import lint, state_from_data


@pytest.mark.parametrize(
    ("field", "prefix"),
    [
        ("resolvers", "0.0.0.0/0"),
        ("portal", "::/0"),
        ("resolvers", "10.0.0.0/8"),
        ("portal", "128.0.0.0/1"),
        ("resolvers", "2001:db8::/32"),
    ],
)
def test_a_garden_open_to_the_internet_is_refused(
    policy_data: dict[str, Any], field: str, prefix: str
) -> None:
    policy_data["settings"][field] = [policy_data["settings"][field][0], prefix]
    problems = lint(state_from_data(policy_data))
    assert [p.path for p in problems] == [f"settings.{field}[1]"]
    assert "walled garden" in problems[0].reason


@pytest.mark.parametrize("prefix", ["198.51.100.53", "198.51.100.0/24", "192.0.0.0/16"])
def test_service_sized_garden_destinations_pass(policy_data: dict[str, Any], prefix: str) -> None:
    policy_data["settings"]["resolvers"] = [prefix, "2001:db8:53::/48", "2001:db8::53"]
    assert lint(state_from_data(policy_data)) == []
