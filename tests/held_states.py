"""Hypothesis strategies for desired states with random holds: the bulk
paths (columns, packed keys) are checked against the entry-by-entry model
over them."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import strategies as st

from edgectl.model import DesiredState, Exemption, Prefix, Quarantine, QuarantineMode

from .conftest import NOW

# No expiry, or one on either side of NOW (expired entries are dropped on load).
EXPIRES = st.one_of(
    st.none(),
    st.integers(-3600, 7 * 86400).map(lambda s: NOW + timedelta(seconds=s, microseconds=500)),
)


@st.composite
def held_states(
    draw: st.DrawFn,
    base: DesiredState,
    keys: st.SearchStrategy[str],
    *,
    quarantines: int = 40,
    exemptions: int = 20,
) -> DesiredState:
    """``base`` with up to ``quarantines`` quarantines and ``exemptions``
    exemptions on keys drawn from ``keys`` (the two lists may share keys)."""
    held: dict[Prefix, Quarantine] = {}
    for text in draw(st.lists(keys, max_size=quarantines, unique=True)):
        key = Prefix.parse(text)
        mode = draw(st.sampled_from(list(QuarantineMode)))
        account = draw(st.one_of(st.none(), st.just("acct-7")))
        held[key] = Quarantine(key, mode, account=account, expires=draw(EXPIRES))
    exempt: dict[Prefix, Exemption] = {}
    for text in draw(st.lists(keys, max_size=exemptions, unique=True)):
        key = Prefix.parse(text)
        ticket = draw(st.one_of(st.none(), st.just("T-1")))
        exempt[key] = Exemption(key, ticket=ticket, expires=draw(EXPIRES))
    return replace(base, quarantines=held, exemptions=exempt)


# A second entry each bulk loader must doubt (leave to the model), with the
# field the model's error names.
DOUBTED_ENTRIES = [
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
]
