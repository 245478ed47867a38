"""Any permutation of the same accounting events, in any batches, ends in the same store state.

RADIUS gives no ordering: a NAS retransmits, packets cross, a Stop may
overtake its Start and an Accounting-On the sessions it ends.  The store
state compared is the history rows, the current bindings, the live keys a
gateway enforces for a quarantined account, and the NAS restarts.
"""

from __future__ import annotations

from typing import Any

import pytest
from feed_support import at, event, quarantine, reset, state, v4, v6, world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgectl.controller.store import Store
from edgectl.controller.store.feed import AccountingEvent, apply_events

# A session id belongs to one account, as a NAS sends it; a1 is quarantined
# so the compiled keys take part.
OWNER = {"s1": "a1", "s2": "a2", "s3": "a1", "s4": "a3"}
ADDRESSES_4 = [None, v4(1), v4(2), v4(3)]
ADDRESSES_6 = [None, v6(1), v6(2)]

session_events = st.builds(
    lambda kind, minute, sid, source, ipv4, ipv6, elapsed: event(
        kind,
        minute,
        sid,
        OWNER[sid],
        source=source,
        ipv4=ipv4,
        ipv6=ipv6,
        session_time=elapsed,
    ),
    st.sampled_from(["start", "interim", "stop"]),
    st.integers(0, 12),  # few distinct minutes, so that times tie
    st.sampled_from(sorted(OWNER)),
    st.sampled_from(["nas1", "nas2"]),
    st.sampled_from(ADDRESSES_4),
    st.sampled_from(ADDRESSES_6),
    st.one_of(st.none(), st.sampled_from([0, 120, 600])),
)
restart_events = st.builds(
    lambda kind, minute, source: event(kind, minute, source=source),
    st.sampled_from(["on", "off"]),
    st.integers(0, 12),
    st.sampled_from(["nas1", "nas2"]),
)
events = st.lists(st.one_of(session_events, session_events, restart_events), max_size=10)


@pytest.fixture
def store_with_world(store: Store) -> Store:
    world(store)
    return store


def _run(store: Store, batches: list[list[AccountingEvent]]) -> Any:
    reset(store)
    quarantine(store, "a1")
    for batch in batches:
        apply_events(store, batch)
    return state(store)


@settings(
    max_examples=60,
    deadline=None,
    # One store for all examples: each run starts with reset(), which empties it.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=events, data=st.data())
def test_any_order_and_batching_gives_the_same_state(
    store_with_world: Store, events: list[AccountingEvent], data: st.DataObject
) -> None:
    reference = _run(store_with_world, [events])
    shuffled = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(shuffled) - 1)), max_size=4)))
    batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    assert _run(store_with_world, [b for b in batches if b]) == reference
    # And one event at a time, in reverse.
    assert _run(store_with_world, [[e] for e in reversed(events)]) == reference


def test_the_comparison_sees_a_difference(store_with_world: Store) -> None:
    """The state compared is not blind: different events give a different state."""
    one = _run(store_with_world, [[event("start", 0, "s1", "a1", ipv4=v4(1))]])
    other = _run(store_with_world, [[event("start", 0, "s1", "a1", ipv4=v4(2))]])
    assert one != other
    assert one[2]  # the quarantined account's key is among what is compared


def test_a_stop_before_its_start_and_a_restart_before_its_sessions(store_with_world: Store) -> None:
    """The orders that matter most, spelled out."""
    start = event("start", 0, "s1", "a1", ipv4=v4(1), ipv6=v6(1))
    stop = event("stop", 10, "s1", "a1", ipv4=v4(1))
    late = event("interim", 12, "s1", "a1", ipv4=v4(1))
    restart = event("on", 5, source="nas1")
    other = event("start", 1, "s2", "a2", ipv4=v4(2))
    forward = _run(store_with_world, [[start], [other], [restart], [stop], [late]])
    backward = _run(store_with_world, [[late], [stop], [restart], [other], [start]])
    assert forward == backward
    rows = {row[2]: row for row in forward[0]}
    assert (rows["s1"][9], rows["s1"][10]) == (at(10), at(5))  # stopped at 10, ended at 5
    assert rows["s1"][8] == at(5)  # last seen: never past the end
    assert forward[1] == {}  # both sessions ended at the restart
