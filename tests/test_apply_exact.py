"""``edgectl apply -f`` of a policy of exact keys onto no table: checked, linted and
packed from key columns (serial.exact_columns, lint.exact_clear,
kernel_write.pack_columns) -- the same verdicts and the same kernel elements as
the ordinary path (state_from_data, lint, pack_keys).

The kernel side (the command in a namespace, against the ordinary path's
table and state file) is netns-tests/test_apply_exact_kernel.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgectl.agent.kernel_write import pack_columns, pack_keys
from edgectl.agent.keys import is_exact
from edgectl.model import DesiredState
from edgectl.model.errors import ModelError
from edgectl.model.lint import exact_clear, lint
from edgectl.model.serial import exact_columns, state_from_data, state_to_data

from .conftest import NOW
from .held_states import DOUBTED_ENTRIES, held_states

_KEYS = st.one_of(
    st.integers(0, 2**16 - 1).map(lambda i: f"100.64.{i >> 8}.{i & 255}"),  # dynamic pool
    st.integers(0, 255).map(lambda i: f"100.65.0.{i}"),  # static pool: no exemption there
    st.integers(0, 127).map(lambda i: f"198.51.100.{i}"),  # infrastructure: lint refuses
    st.integers(0, 2**8 - 1).map(lambda i: f"2001:db8:1000:{i:x}00::/56"),  # exact IPv6
    st.integers(0, 255).map(lambda i: f"100.65.{i}.0/24"),  # a range: not for the columns
    st.integers(0, 255).map(lambda i: f"2001:db8:2000:{i:x}00::/60"),  # not exact
)


@st.composite
def _states(draw: st.DrawFn, base: DesiredState) -> DesiredState:
    if draw(st.booleans()):  # no walled garden: its modes are lint problems
        base = replace(base, settings=replace(base.settings, resolvers=(), portal=()))
    return draw(held_states(base, _KEYS, quarantines=30, exemptions=15))


def _sorted(packed: dict[str, list[bytes]]) -> dict[str, list[bytes]]:
    return {name: sorted(elements) for name, elements in packed.items()}


def test_exact_columns_write_and_lint_what_the_model_does(policy_state: DesiredState) -> None:
    """For any mix of keys: columns exactly when every key is exact; then the same
    state, the same lint verdict and the same packed elements as the model."""

    @settings(max_examples=150, deadline=None)
    @given(_states(policy_state), st.integers(0, 3 * 86400))
    def check(state: DesiredState, later: int) -> None:
        data = json.loads(json.dumps(state_to_data(state)))
        columns = exact_columns(data)
        lengths = state.delegated_lengths()
        every_exact = all(
            is_exact(key.version, key.length, lengths)
            for key in (*state.quarantines, *state.exemptions)
        )
        assert (columns is not None) == every_exact
        if columns is None:
            return
        assert columns.state() == state_from_data(data) == state
        assert exact_clear(columns) == (not lint(state))
        now = NOW + timedelta(seconds=later)
        assert _sorted(pack_columns(columns, now)) == _sorted(pack_keys(state, now))

    check()


def test_a_key_given_twice_is_left_to_the_model_which_names_it(
    policy_data: dict[str, Any],
) -> None:
    for key in ("100.64.0.5", "2001:db8:1000:300::/56"):
        data = {
            **policy_data,
            "quarantines": [{"key": key, "mode": "smtp"}, {"key": key, "mode": "block"}],
        }
        assert exact_columns(data) is None
        with pytest.raises(ModelError, match="given twice"):
            state_from_data(data)


@pytest.mark.parametrize(("entry", "field"), DOUBTED_ENTRIES)
def test_an_entry_the_columns_doubt_is_named_by_the_model(
    policy_data: dict[str, Any], entry: dict[str, str], field: str
) -> None:
    data = {**policy_data, "quarantines": [{"key": "100.64.0.5", "mode": "smtp"}, entry]}
    assert exact_columns(data) is None
    with pytest.raises(ModelError, match=field):
        state_from_data(data)


def test_a_bad_structure_field_is_left_to_the_model(policy_data: dict[str, Any]) -> None:
    data = {**policy_data, "settings": {"block_action": "explode"}}
    assert exact_columns(data) is None
    with pytest.raises(ModelError, match=r"settings\.block_action"):
        state_from_data(data)
