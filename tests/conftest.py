"""Unit tier: no root, no kernel, no network."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgectl.model import DesiredState, state_from_data

DATA = Path(__file__).parent / "data"
# Golden output depends on element timeouts, so "now" is fixed.
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def policy_data() -> dict[str, object]:
    with (DATA / "policy.toml").open("rb") as file:
        return tomllib.load(file)


@pytest.fixture
def policy_state(policy_data: dict[str, object]) -> DesiredState:
    return state_from_data(policy_data)
