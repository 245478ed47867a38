"""``edgectl apply -f`` of a policy of exact keys onto no table: checked, linted and
packed from key columns (serial.exact_columns, lint.exact_clear,
kernel_write.pack_exact) -- the same verdicts and the same kernel elements as
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

from edgectl.agent.kernel_write import pack_exact, pack_keys
from edgectl.agent.keys import is_exact
from edgectl.model import DesiredState, Exemption, Prefix, Quarantine, QuarantineMode
from edgectl.model.errors import ModelError
from edgectl.model.lint import exact_clear, lint
from edgectl.model.serial import exact_columns, state_from_data, state_to_data

from .conftest import NOW

_KEYS = st.one_of(
    st.integers(0, 2**16 - 1).map(lambda i: f"100.64.{i >> 8}.{i & 255}"),  # dynamic pool
    st.integers(0, 255).map(lambda i: f"100.65.0.{i}"),  # static pool: no exemption there
    st.integers(0, 127).map(lambda i: f"198.51.100.{i}"),  # infrastructure: lint refuses
    st.integers(0, 2**8 - 1).map(lambda i: f"2001:db8:1000:{i:x}00::/56"),  # exact IPv6
    st.integers(0, 255).map(lambda i: f"100.65.{i}.0/24"),  # a range: not for the columns
    st.integers(0, 255).map(lambda i: f"2001:db8:2000:{i:x}00::/60"),  # not exact
)
_EXPIRES = st.one_of(
    st.none(),
    st.integers(-3600, 7 * 86400).map(lambda s: NOW + timedelta(seconds=s, microseconds=500)),
)


@st.composite
def _states(draw: st.DrawFn, base: DesiredState) -> DesiredState:
    quarantines: dict[Prefix, Quarantine] = {}
    for text in draw(st.lists(_KEYS, max_size=30, unique=True)):
        key = Prefix.parse(text)
        mode = draw(st.sampled_from(list(QuarantineMode)))
        account = draw(st.one_of(st.none(), st.just("acct-7")))
        quarantines[key] = Quarantine(key, mode, account=account, expires=draw(_EXPIRES))
    exemptions: dict[Prefix, Exemption] = {}
    for text in draw(st.lists(_KEYS, max_size=15, unique=True)):
        key = Prefix.parse(text)
        ticket = draw(st.one_of(st.none(), st.just("T-1")))
        exemptions[key] = Exemption(key, ticket=ticket, expires=draw(_EXPIRES))
    settings_ = base.settings
    if draw(st.booleans()):  # no walled garden: its modes are lint problems
        settings_ = replace(settings_, resolvers=(), portal=())
    return replace(base, settings=settings_, quarantines=quarantines, exemptions=exemptions)


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
        assert _sorted(pack_exact(columns, now)) == _sorted(pack_keys(state, now))

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


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"key": "100.64.0.300", "mode": "smtp"}, r"quarantines\[1\]\.key"),
        ({"key": "100.64.0.6", "mode": "smtpp"}, r"quarantines\[1\]\.mode"),
        ({"key": "100.64.0.6", "mode": "smtp", "expires": "soon"}, r"quarantines\[1\]\.expires"),
        (
            {"key": "100.64.0.6", "mode": "smtp", "expires": "2026-12-01T00:00:00"},
            r"quarantines\[1\]\.expires",
        ),
        ({"key": "100.64.0.6", "mode": "smtp", "account": ""}, r"quarantines\[1\]\.account"),
        ({"key": "100.64.0.6", "mode": "smtp", "note": "x"}, r"quarantines\[1\]\.note"),
        ({"mode": "smtp"}, r"quarantines\[1\]\.key"),
    ],
)
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
