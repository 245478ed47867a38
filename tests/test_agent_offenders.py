"""The offender book: prefixes parsed, sources keyed, bounded in time and memory (no kernel)."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from edgectl.agent.daemon import offenders
from edgectl.agent.daemon.offenders import (
    MAX_TRACKED,
    KeyMapper,
    OffenderBook,
    Rule,
    parse_prefix,
)
from edgectl.agent.nflog import LogEvent
from edgectl.agent.render import render_full
from edgectl.model import DesiredState, Prefix
from edgectl.model.offenders import KINDS, MAX_REPORTED, WINDOW_MAX
from edgectl.model.policy import Pool, PoolKind
from tests.conftest import NOW

RATE = "edgectl ratelimit profile=residential: "


class Clock:
    """Monotonic and wall time that only move when told to.

    ``now`` moves both; ``step`` moves the wall clock alone (NTP, an operator).
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.step = 0.0

    def tick(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_764_417_600.0 + self.now + self.step  # 2025-11-29T12:16:40Z at tick 1000


def seen(entry: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(entry["first_seen"]), datetime.fromisoformat(entry["last_seen"])


def ev(source: str, prefix: str = RATE) -> LogEvent:
    return LogEvent(prefix, Prefix.parse(source))


def book_for(state: DesiredState, clock: Clock, **kwargs: int | float) -> OffenderBook:
    book = OffenderBook(clock=clock.tick, wall=clock.wall, **kwargs)  # type: ignore[arg-type]
    book.follow(state.pools)
    return book


# --- prefixes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (RATE, Rule("ratelimit", "residential", False)),
        ("edgectl concurrency profile=home shadow: ", Rule("concurrency", "home", True)),
        ("edgectl destinationlimit profile=home: ", Rule("destinationlimit", "home", False)),
        ("edgectl op25b pool=home_v4: ", Rule("op25b", "home_v4", False)),
        ("edgectl op25b pool=home_v4 shadow: ", Rule("op25b", "home_v4", True)),
        ("edgectl quarantine=smtp: ", Rule("quarantine", "smtp", False)),
        ("edgectl quarantine=walled-garden: ", Rule("quarantine", "walled-garden", False)),
        ("edgectl quarantine=block: ", Rule("quarantine", "block", False)),
    ],
)
def test_prefixes_of_our_rules(text: str, rule: Rule) -> None:
    assert parse_prefix(text) == rule


@pytest.mark.parametrize(
    "text",
    [
        "",
        "IN=eth0 OUT=eth1 ",  # someone else's rule logging to the group
        "edgectlx ratelimit profile=a: ",
        "edgectl ratelimit: ",
        "edgectl ratelimit pool=a: ",  # profiles, not pools, for limits
        "edgectl op25b profile=a: ",
        "edgectl ratelimit profile=Bad-Name: ",
        "edgectl ratelimit profile=a extra: ",
        "edgectl quarantine=holiday: ",
        "edgectl quarantine=smtp shadow: ",  # quarantines have no shadow mode
        "edgectl nonsense=1: ",
    ],
)
def test_prefixes_that_are_not_ours(text: str) -> None:
    assert parse_prefix(text) is None


def test_every_log_prefix_render_writes_parses(policy_state: DesiredState) -> None:
    """The parser is render's log() read backwards: both must change together."""
    profile = replace(policy_state.rate_limits[0], shadow=True)
    pools = tuple(
        replace(p, op25b_shadow=True) if p.name == "home_v6" else p for p in policy_state.pools
    )
    settings = replace(policy_state.settings, log_group=7)
    state = replace(policy_state, settings=settings, pools=pools, rate_limits=(profile,))
    script = str(render_full(state, NOW).transaction)
    prefixes = re.findall(r'log prefix "([^"]*)" group 7', script)
    rules = {parse_prefix(text) for text in prefixes}
    assert len(prefixes) >= 8 and None not in rules
    # ... and the kinds it finds are exactly the ones the controller takes.
    assert sorted({rule.kind for rule in rules if rule}) == sorted(KINDS)
    assert rules == {
        Rule("ratelimit", "residential", True),
        Rule("concurrency", "residential", True),
        Rule("destinationlimit", "residential", True),
        Rule("op25b", "home_v4", False),
        Rule("op25b", "home_v6", True),
        Rule("quarantine", "smtp", False),
        Rule("quarantine", "walled-garden", False),
        Rule("quarantine", "block", False),
    }


# --- keys -------------------------------------------------------------------------


def test_keys_by_pool(policy_state: DesiredState) -> None:
    mapper = KeyMapper(policy_state.pools)
    # IPv4: always the address.
    assert mapper.key(Prefix.parse("100.64.1.7")) == Prefix.parse("100.64.1.7/32")
    # IPv6 in home_v6 (delegates /56): every address of the /56 is one subscriber.
    a = mapper.key(Prefix.parse("2001:db8:1000:1ff::7"))
    b = mapper.key(Prefix.parse("2001:db8:1000:1aa:ffff::1"))
    assert a == b == Prefix.parse("2001:db8:1000:100::/56")
    # Outside every pool: the /64, never the /128.
    assert mapper.key(Prefix.parse("2001:db8:9999:1:2::3")) == Prefix.parse("2001:db8:9999:1::/64")


def test_keys_follow_the_pools_of_the_state_in_force(policy_state: DesiredState) -> None:
    clock = Clock()
    book = book_for(policy_state, clock)
    book.record([ev("2001:db8:1000:1ff::7")])
    wider = Pool("home_v6", PoolKind.DYNAMIC, (Prefix.parse("2001:db8:1000::/40"),), 48)
    book.follow((*[p for p in policy_state.pools if p.name != "home_v6"], wider))
    book.record([ev("2001:db8:1000:1ff::7")])
    assert {e["key"] for e in book.entries()} == {
        "2001:db8:1000:100::/56",  # keyed by the state in force when it was logged
        "2001:db8:1000::/48",
    }


def test_infrastructure_v6_without_delegation_keys_on_the_64() -> None:
    infra = Pool("servers", PoolKind.INFRASTRUCTURE, (Prefix.parse("2001:db8:eeee::/48"),))
    mapper = KeyMapper([infra])
    assert mapper.key(Prefix.parse("2001:db8:eeee:1:2::3")) == Prefix.parse("2001:db8:eeee:1::/64")


def test_nested_pools_key_by_the_most_specific_delegation() -> None:
    outer = Pool(
        "dyn", PoolKind.DYNAMIC, (Prefix.parse("2001:db8::/32"),), subscriber_prefix_len=56
    )
    inner = Pool(
        "biz", PoolKind.STATIC, (Prefix.parse("2001:db8:2000::/40"),), subscriber_prefix_len=64
    )
    mapper = KeyMapper([outer, inner])
    assert mapper.key(Prefix.parse("2001:db8:2000:1:2::3")) == Prefix.parse("2001:db8:2000:1::/64")
    assert mapper.key(Prefix.parse("2001:db8:3000:1:2::3")) == Prefix.parse("2001:db8:3000::/56")


# --- the book -----------------------------------------------------------------------


def test_report_entries(policy_state: DesiredState) -> None:
    clock = Clock()
    book = book_for(policy_state, clock)
    assert book.record([ev("100.64.1.7"), ev("100.64.1.7")]) == 2
    clock.now += 5
    book.record(
        [
            ev("100.64.1.7"),
            ev("2001:db8:1000:2ff::1", "edgectl op25b pool=home_v6 shadow: "),
            ev("100.64.0.11", "edgectl quarantine=smtp: "),
        ]
    )
    entries = book.entries()
    assert entries[0] == {
        "key": "100.64.1.7/32",
        "kind": "ratelimit",
        "policy": "residential",
        "shadow": False,
        "count": 3,
        "first_seen": "2025-11-29T12:16:40.000+00:00",
        "last_seen": "2025-11-29T12:16:45.000+00:00",
    }
    assert {(e["key"], e["kind"], e["policy"], e["shadow"], e["count"]) for e in entries[1:]} == {
        ("2001:db8:1000:200::/56", "op25b", "home_v6", True, 1),
        ("100.64.0.11/32", "quarantine", "smtp", False, 1),
    }
    for entry in entries:
        for field in ("first_seen", "last_seen"):
            assert datetime.fromisoformat(entry[field]).tzinfo is not None


def test_shadow_and_enforced_hits_are_separate_entries(policy_state: DesiredState) -> None:
    book = book_for(policy_state, Clock())
    book.record(
        [ev("100.64.1.7"), ev("100.64.1.7", "edgectl ratelimit profile=residential shadow: ")]
    )
    assert sorted(e["shadow"] for e in book.entries()) == [False, True]


def test_foreign_and_sourceless_events_are_ignored(policy_state: DesiredState) -> None:
    book = book_for(policy_state, Clock())
    recorded = book.record(
        [ev("100.64.1.7", "IN=eth0 OUT=eth1 "), LogEvent(RATE, None), ev("100.64.1.8")]
    )
    assert (recorded, book.ignored, len(book)) == (1, 2, 1)


def test_an_entry_ends_a_window_after_its_last_event(policy_state: DesiredState) -> None:
    clock = Clock()
    book = book_for(policy_state, clock, window=900)
    book.record([ev("100.64.1.7"), ev("100.64.1.8")])
    clock.now += 600
    book.record([ev("100.64.1.8")])  # .8 keeps offending, .7 stopped
    clock.now += 300
    assert len(book.entries()) == 2  # exactly one window after .7's last event: still in
    clock.now += 0.001
    assert [(e["key"], e["count"]) for e in book.entries()] == [("100.64.1.8/32", 2)]
    clock.now += 600
    assert book.expire() == 0 and book.entries() == []


def test_a_wall_clock_step_neither_expires_nor_reverses_an_entry(
    policy_state: DesiredState,
) -> None:
    clock = Clock()
    book = book_for(policy_state, clock, window=900)
    book.record([ev("100.64.1.7"), ev("100.64.1.8")])
    clock.now += 60
    clock.step -= 3600  # the wall clock steps back an hour (NTP fixing a fast clock)
    book.record([ev("100.64.1.7")])
    clock.now += 60
    clock.step += 2 * 86400  # ... then forward two days, far beyond the window
    book.record([ev("100.64.1.9")])

    def report() -> dict[str, dict[str, Any]]:
        entries = {e["key"]: e for e in book.entries()}
        for entry in entries.values():  # the controller refuses the whole report otherwise
            first, last = seen(entry)
            assert first <= last, entry
        return entries

    # 120 s of a 900 s window have passed: nothing ended, whatever the wall clock says.
    entries = report()
    assert sorted(entries) == ["100.64.1.7/32", "100.64.1.8/32", "100.64.1.9/32"]
    seven = entries["100.64.1.7/32"]
    assert seven["count"] == 2
    assert seven["last_seen"] == seven["first_seen"]  # held there, not reported before it
    # Each entry still ends exactly one window after its last event, by the monotonic clock.
    clock.now += 900 - 120 + 0.001
    assert sorted(report()) == ["100.64.1.7/32", "100.64.1.9/32"]
    book.record([ev("100.64.1.7")])  # the wall clock is two days ahead of first_seen now
    seven = report()["100.64.1.7/32"]
    first, last = seen(seven)
    assert seven["count"] == 3 and last - first > timedelta(days=1)  # the step, reported
    clock.now += 900.001
    assert report() == {}


def test_a_report_is_a_snapshot_while_events_arrive(
    policy_state: DesiredState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event recorded while a report is being built shows whole in the next one, not
    half (its count left out, its last_seen taken) in this one."""
    clock = Clock()
    book = book_for(policy_state, clock)
    book.record([ev("100.64.1.7")])
    format_time = offenders._iso
    workers: list[threading.Thread] = []

    def format_while_an_event_arrives(wall: float) -> str:
        if not workers:
            clock.now += 5
            workers.append(threading.Thread(target=book.record, args=([ev("100.64.1.7")],)))
            workers[0].start()
            workers[0].join(timeout=5)
        return format_time(wall)

    monkeypatch.setattr(offenders, "_iso", format_while_an_event_arrives)
    (entry,) = book.entries()
    workers[0].join(timeout=5)
    assert not workers[0].is_alive()
    assert (entry["count"], entry["last_seen"]) == (1, entry["first_seen"])
    (entry,) = book.entries()
    first, last = seen(entry)
    assert entry["count"] == 2 and last - first == timedelta(seconds=5)


def test_memory_cap_evicts_the_least_recently_seen(policy_state: DesiredState) -> None:
    clock = Clock()
    book = book_for(policy_state, clock, max_tracked=3)
    for address in ("100.64.0.1", "100.64.0.2", "100.64.0.3"):
        clock.now += 1
        book.record([ev(address)])
    clock.now += 1
    book.record([ev("100.64.0.1")])  # .1 is now the most recent, .2 the least
    clock.now += 1
    book.record([ev("100.64.0.4")])
    assert sorted(e["key"] for e in book.entries()) == [
        "100.64.0.1/32",
        "100.64.0.3/32",
        "100.64.0.4/32",
    ]
    assert book.evicted == 1


def test_report_holds_the_top_counts(policy_state: DesiredState) -> None:
    book = book_for(policy_state, Clock(), max_reported=2)
    book.record([ev("100.64.0.1")] * 2 + [ev("100.64.0.2")] * 5 + [ev("100.64.0.3")] * 3)
    assert [(e["key"], e["count"]) for e in book.entries()] == [
        ("100.64.0.2/32", 5),
        ("100.64.0.3/32", 3),
    ]


def test_default_bounds_hold_under_many_subscribers(policy_state: DesiredState) -> None:
    book = book_for(policy_state, Clock())
    sources = [Prefix(4, (100 << 24) | (64 << 16) | n, 32) for n in range(MAX_TRACKED + 2000)]
    book.record(LogEvent(RATE, source) for source in sources)
    assert len(book) == MAX_TRACKED and book.evicted == 2000
    assert len(book.entries()) == MAX_REPORTED


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        OffenderBook(0)
    with pytest.raises(ValueError, match="max_tracked"):
        OffenderBook(900, max_tracked=0)


def test_a_book_the_controller_would_refuse_is_refused_here() -> None:
    """Beyond the report's limits every status report would be a 422: fail at start instead."""
    OffenderBook(WINDOW_MAX, max_reported=MAX_REPORTED)
    with pytest.raises(ValueError, match="window"):
        OffenderBook(WINDOW_MAX + 1)
    with pytest.raises(ValueError, match="max_reported"):
        OffenderBook(900, max_reported=MAX_REPORTED + 1)
    with pytest.raises(ValueError, match="max_reported"):
        OffenderBook(900, max_reported=-1)
