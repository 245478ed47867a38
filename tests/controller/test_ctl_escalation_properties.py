"""Property tests: batch attribution answers as ``holder_at`` does, the ladder's
arithmetic, and the brakes never let more than the cap through in any hour,
whatever order the actions come in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from ctl_backends import SqliteBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgectl.controller.compile import hex_of
from edgectl.controller.escalation import ladder
from edgectl.controller.store import Store, attribution, history
from edgectl.controller.store import schema as t
from edgectl.model import Prefix, QuarantineMode

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _minute(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SqliteBackend:
    return SqliteBackend(tmp_path_factory.mktemp("escalation"))


interval = st.tuples(
    st.integers(0, 3),  # account
    st.integers(1, 3),  # address 100.64.0.N
    st.integers(0, 60),  # started (minute)
    st.one_of(st.none(), st.integers(0, 30)),  # length, None: open
    st.sampled_from(["nas1", "nas2"]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(interval, max_size=12),
    asks=st.lists(st.tuples(st.integers(1, 4), st.integers(-1, 95)), min_size=1, max_size=12),
)
def test_batch_attribution_answers_as_holder_at(
    template: SqliteBackend,
    rows: list[tuple[int, int, int, int | None, str]],
    asks: list[tuple[int, int]],
) -> None:
    store = Store.open(template.fresh_url(), migrate=False)
    try:
        with store.database.write() as connection:
            connection.execute(
                sa.insert(t.accounts),
                [{"id": i + 1, "ref": f"cust-{i}", "created_at": T0} for i in range(4)],
            )
            for n, (account, address, start, length, source) in enumerate(rows):
                prefix = Prefix.parse(f"100.64.0.{address}")
                connection.execute(
                    sa.insert(t.session_history).values(
                        account_id=account + 1,
                        source=source,
                        session_id=f"s{n}",
                        ipv4=str(prefix),
                        ipv4_hex=hex_of(prefix),
                        started=_minute(start),
                        last_seen=_minute(start),
                        ended=None if length is None else _minute(start + length),
                    )
                )
        wanted = [(Prefix.parse(f"100.64.0.{a}"), _minute(m)) for a, m in asks]
        with store.read() as connection:
            batch = attribution.holders(connection, wanted)
            single = [history.holder_at(connection, a, when) for a, when in wanted]
        for got, expected in zip(batch, single, strict=True):
            if expected is None:
                assert got is None
            else:
                assert got is not None
                assert {k: v for k, v in got.items() if k != "account_id"} == expected
    finally:
        store.close()
        Path(store.database.url.removeprefix("sqlite:///")).unlink()


def _ladder(strikes: list[int]) -> ladder.Ladder:
    modes = [QuarantineMode.WALLED_GARDEN, QuarantineMode.SMTP, QuarantineMode.BLOCK]
    steps = tuple(
        ladder.Step(s, modes[i % 3], 3600 * (i + 1)) for i, s in enumerate(sorted(set(strikes)))
    )
    return ladder.Ladder((ladder.Rule("report", cls="spam"),), steps, 86_400)


@given(
    previous=st.lists(st.integers(-200_000, 200_000), max_size=30),
    window=st.integers(60, 100_000),
)
def test_strike_number_counts_only_undecayed_earlier_strikes(
    previous: list[int], window: int
) -> None:
    times = [T0 + timedelta(seconds=s) for s in previous]
    number = ladder.strike_number(times, T0, window)
    assert number == 1 + sum(1 for s in previous if -window < s <= 0)
    # Decay: far enough in the future, everything has decayed.
    later = T0 + timedelta(seconds=max(previous, default=0) + window)
    assert ladder.strike_number(times, later, window) == 1


@given(
    strikes=st.lists(st.integers(2, 50), max_size=6).map(lambda s: [1, *s]),
    a=st.integers(1, 100),
    b=st.integers(1, 100),
)
def test_the_ladder_only_climbs(strikes: list[int], a: int, b: int) -> None:
    steps = _ladder(strikes)
    low, high = sorted((a, b))
    (i, step_low), (j, step_high) = ladder.step_for(steps, low), ladder.step_for(steps, high)
    assert i <= j
    assert step_low.strike <= low and step_high.strike <= high
    # The highest reachable step: no later step starts at or below the number.
    assert all(s.strike > high for s in steps.steps[j + 1 :])


@given(duration=st.integers(60, 10**12), review=st.booleans())
def test_hold_durations_are_capped(duration: int, review: bool) -> None:
    step = ladder.Step(1, QuarantineMode.SMTP, duration, review)
    expiry = ladder.hold_expiry(step, T0)
    assert expiry is not None and expiry - T0 <= timedelta(seconds=ladder.MAX_DURATION)
    spec = {
        "strikes": [{"source": "report", "class": "spam"}],
        "steps": [{"strike": 1, "mode": "smtp", "duration": duration}],
        "window": 3600,
    }
    if duration > ladder.MAX_DURATION:
        with pytest.raises(ladder.SpecError):
            ladder.parse(spec)
    else:
        assert ladder.parse(spec).steps[0].duration == duration


actions = st.lists(
    st.tuples(st.integers(0, 4 * 3600), st.sampled_from(["a", "b", "c", None])),
    max_size=60,
)


@settings(max_examples=300)
@given(actions=actions, fleet=st.integers(0, 12), pool=st.integers(0, 6))
def test_brakes_never_pass_more_than_the_caps_in_any_hour(
    actions: list[tuple[int, str | None]], fleet: int, pool: int
) -> None:
    caps = ladder.Caps(fleet, pool)
    admitted: list[tuple[datetime, str | None]] = []
    for second, where in actions:  # as drawn: any order, not sorted by time
        at = T0 + timedelta(seconds=second)
        if ladder.admit(admitted, at, where, caps):
            admitted.append((at, where))
    times = sorted(admitted, key=lambda item: item[0])
    for start, _ in times:
        window = [(at, p) for at, p in times if start <= at < start + ladder.HOUR]
        assert len(window) <= fleet
        for name in ("a", "b", "c"):
            assert sum(1 for _, p in window if p == name) <= pool


@given(count=st.integers(1, 40), fleet=st.integers(1, 10))
def test_brakes_admit_up_to_the_cap_in_order(count: int, fleet: int) -> None:
    """Not a brake that refuses everything: in time order, exactly the cap passes an hour."""
    caps = ladder.Caps(fleet, 10**6)
    admitted: list[tuple[datetime, str | None]] = []
    for n in range(count):
        at = T0 + timedelta(seconds=n)
        if ladder.admit(admitted, at, "a", caps):
            admitted.append((at, "a"))
    assert len(admitted) == min(count, fleet)
    later = T0 + ladder.HOUR + timedelta(seconds=count)
    assert ladder.admit(admitted, later, "a", caps)
