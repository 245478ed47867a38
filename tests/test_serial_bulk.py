"""Long entry lists load whole (serial._bulk_*) exactly as entry by entry, or not at all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from edgectl.model import ModelError
from edgectl.model.policy import keyed
from edgectl.model.serial import (
    _bulk_exemptions,
    _bulk_quarantines,
    _entries,
    exemption_from_data,
    quarantine_from_data,
    state_from_data,
)

QUARANTINES: list[Any] = [
    {"key": "100.64.0.1", "mode": "smtp"},
    {"key": "100.64.0.2", "mode": "block", "expires": "2026-12-31T00:00:00+00:00"},
    {"key": "2001:db8:1000:200::/56", "mode": "walled-garden", "account": "acct-7"},
    {"key": "100.64.9.0/24", "mode": "smtp", "expires": datetime(2027, 1, 1, tzinfo=UTC)},
    {"key": "100.64.0.3/32", "mode": "smtp"},
    {"key": "100.64.0.4", "mode": "block"},
]
EXEMPTIONS: list[Any] = [
    {"key": "100.64.1.1", "ticket": "T-1"},
    {"key": "2001:db8:1000:300::/56", "account": "a", "expires": "2026-12-31T00:00:00Z"},
    {"key": "100.64.1.2"},
]


def test_whole_lists_build_what_entry_by_entry_builds() -> None:
    quarantines = _bulk_quarantines(QUARANTINES)
    assert quarantines == keyed(_entries(QUARANTINES, "q", quarantine_from_data), "q")
    assert list(quarantines or {}) == [quarantine_from_data(q).key for q in QUARANTINES]
    exemptions = _bulk_exemptions(EXEMPTIONS)
    assert exemptions == keyed(_entries(EXEMPTIONS, "e", exemption_from_data), "e")
    # All IPv4 hosts: the one-unpack path alone.
    hosts = [{"key": f"100.64.{i // 256}.{i % 256}", "mode": "smtp"} for i in range(600)]
    assert _bulk_quarantines(hosts) == keyed(_entries(hosts, "q", quarantine_from_data), "q")


BAD_QUARANTINES = [
    ({"key": "100.64.0.256", "mode": "smtp"}, r"quarantines\[6\]\.key"),
    ({"key": "100.64.0.9", "mode": "smpt"}, r"quarantines\[6\]\.mode"),
    ({"key": "100.64.0.9"}, r"quarantines\[6\]\.mode"),
    ({"key": 1684013065, "mode": "smtp"}, r"quarantines\[6\]\.key"),
    ({"key": "100.64.0.9", "mode": "smtp", "why": "x"}, r"quarantines\[6\]\.why"),
    ({"key": "100.64.0.9", "mode": "smtp", "account": "a\x07"}, r"quarantines\[6\]\.account"),
    ({"key": "100.64.0.9", "mode": "smtp", "expires": "soon"}, r"quarantines\[6\]\.expires"),
    ({"key": "100.64.0.9", "mode": "smtp", "expires": "2027-01-01T00:00:00"}, r"\[6\]\.expires"),
    ({"key": "100.64.0.0/10x", "mode": "smtp"}, r"quarantines\[6\]\.key"),
    ({"key": "100.64.0.1", "mode": "block"}, r"quarantines\[100\.64\.0\.1\].*twice"),
    (["100.64.0.9", "smtp"], r"quarantines\[6\]"),
]


@pytest.mark.parametrize(("bad", "where"), BAD_QUARANTINES)
def test_one_bad_entry_refuses_the_state_naming_it(bad: Any, where: str) -> None:
    with pytest.raises(ModelError, match=where):
        state_from_data({"gateway": "gw", "quarantines": [*QUARANTINES, bad]})


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"key": "100.64.1.9", "ticket": ""}, r"exemptions\[3\]\.ticket"),
        ({"key": "100.64.1.9", "mode": "smtp"}, r"exemptions\[3\]\.mode"),
        ({"key": "100.64.1.300"}, r"exemptions\[3\]\.key"),
        ({"key": "100.64.1.2"}, r"exemptions\[100\.64\.1\.2\].*twice"),
    ],
)
def test_one_bad_exemption_refuses_the_state_naming_it(bad: Any, where: str) -> None:
    with pytest.raises(ModelError, match=where):
        state_from_data({"gateway": "gw", "exemptions": [*EXEMPTIONS, bad]})


def test_what_only_the_entry_path_reads_still_loads() -> None:
    """A key with spaces around it is no bare address for inet_pton; Prefix.parse strips it."""
    padded = [*QUARANTINES, {"key": " 100.64.0.9 ", "mode": "smtp"}]
    assert _bulk_quarantines(padded) is None
    state = state_from_data({"gateway": "gw", "quarantines": padded})
    assert state.quarantines == keyed(_entries(padded, "q", quarantine_from_data), "q")


TEXT_TIMES = [
    {"key": "100.64.2.1", "mode": "smtp", "expires": "2026-12-31T00:00:00+00:00"},
    {"key": "100.64.2.2", "mode": "block", "expires": "2026-12-31T09:30:00.250+09:00"},
    {"key": "100.64.2.3", "mode": "smtp"},
    {"key": "100.64.2.4", "mode": "smtp", "expires": "2027-01-01T00:00:00Z"},
]


def test_times_given_as_text_load_in_bulk_as_entry_by_entry() -> None:
    built = _bulk_quarantines(TEXT_TIMES)
    assert built is not None
    assert built == keyed(_entries(TEXT_TIMES, "q", quarantine_from_data), "q")
    assert [q.expires for q in built.values()] == [
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime.fromisoformat("2026-12-31T09:30:00.250+09:00"),
        None,
        datetime(2027, 1, 1, tzinfo=UTC),
    ]


@pytest.mark.parametrize("expires", ["2027-01-01T00:00:00", "soon", "2027-13-01T00:00:00Z"])
def test_one_bad_text_time_refuses_the_state_naming_it(expires: str) -> None:
    bad = {"key": "100.64.2.9", "mode": "smtp", "expires": expires}
    assert _bulk_quarantines([*TEXT_TIMES, bad]) is None
    with pytest.raises(ModelError, match=r"quarantines\[4\]\.expires"):
        state_from_data({"gateway": "gw-1", "quarantines": [*TEXT_TIMES, bad]})
