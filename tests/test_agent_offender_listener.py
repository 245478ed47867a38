"""The listener thread against a fake event source: binds, rebinds, reasons, losses (no kernel)."""

from __future__ import annotations

import errno
import queue
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.daemon.offender_listener import NO_LOG_GROUP, NO_STATE, OffenderListener
from edgectl.agent.daemon.offenders import OffenderBook
from edgectl.agent.nflog import LogEvent, NflogError
from edgectl.model import DesiredState, Prefix
from edgectl.model.offenders import REASON_MAX
from edgectl.testing.wait import wait_until

RATE = "edgectl ratelimit profile=residential: "


class FakeSource:
    def __init__(self, group: int) -> None:
        self.group = group
        self.overruns = 0
        self.lost = 0
        self.closed = False
        self.pending: queue.Queue[list[LogEvent]] = queue.Queue()

    def read(self) -> list[LogEvent]:
        try:
            return self.pending.get(timeout=0.02)
        except queue.Empty:
            return []

    def close(self) -> None:
        self.closed = True


class Opener:
    """Hands out FakeSources; refuses the groups in ``held`` the way the kernel does."""

    def __init__(self) -> None:
        self.opened: list[FakeSource] = []
        self.held: set[int] = set()
        self.attempts = 0
        self.lock = threading.Lock()

    def __call__(self, group: int, netns: str | None) -> FakeSource:
        assert netns == "gw-ns"
        with self.lock:
            self.attempts += 1
            if group in self.held:
                raise NflogError(errno.EPERM, f"nflog group {group} is bound by another process")
            source = FakeSource(group)
            self.opened.append(source)
            return source

    def current(self) -> FakeSource | None:
        with self.lock:
            live = [s for s in self.opened if not s.closed]
        return live[-1] if len(live) == 1 else None


@pytest.fixture
def opener() -> Opener:
    return Opener()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics("gw-a")


@pytest.fixture
def listener(opener: Opener, metrics: Metrics) -> Iterator[OffenderListener]:
    made = OffenderListener(
        "gw-ns", OffenderBook(600), metrics, open_source=opener, retry_interval=0.05, idle=0.01
    )
    stop = threading.Event()
    thread = threading.Thread(target=made.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        yield made
    finally:
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert all(source.closed for source in opener.opened)  # the group is released


def with_group(state: DesiredState, group: int | None) -> DesiredState:
    return replace(state, settings=replace(state.settings, log_group=group))


def test_nothing_is_bound_before_a_state_is_in_force(
    listener: OffenderListener, opener: Opener
) -> None:
    report = listener.report()
    assert report == {"available": False, "reason": NO_STATE, "window_seconds": 600, "entries": []}
    assert opener.attempts == 0


def test_no_log_group_says_why(
    listener: OffenderListener, opener: Opener, policy_state: DesiredState
) -> None:
    listener.follow(with_group(policy_state, None))
    report = listener.report()
    assert (report["available"], report["reason"]) == (False, NO_LOG_GROUP)
    assert report["reason"] == (
        "settings.log_group is not set: block log lines go to the kernel log, "
        "which the agent does not read"
    )
    assert opener.attempts == 0


def test_events_of_the_bound_group_become_entries(
    listener: OffenderListener, opener: Opener, metrics: Metrics, policy_state: DesiredState
) -> None:
    listener.follow(with_group(policy_state, 7))
    assert wait_until(lambda: opener.current() is not None, timeout=5)
    source = opener.current()
    assert source is not None and source.group == 7
    source.pending.put([LogEvent(RATE, Prefix.parse("100.64.1.7"))] * 3)
    assert wait_until(lambda: len(listener.report()["entries"]) == 1, timeout=5)
    report = listener.report()
    assert (report["available"], report["reason"]) == (True, None)
    (entry,) = report["entries"]
    assert (entry["key"], entry["kind"], entry["count"]) == ("100.64.1.7/32", "ratelimit", 3)
    assert wait_until(lambda: metrics.offenders == 1, timeout=5)


def test_a_new_group_is_rebound_and_unsetting_it_releases_it(
    listener: OffenderListener, opener: Opener, policy_state: DesiredState
) -> None:
    listener.follow(with_group(policy_state, 7))
    assert wait_until(lambda: (s := opener.current()) is not None and s.group == 7, timeout=5)
    listener.follow(with_group(replace(policy_state, revision=8), 7))  # same group: kept
    listener.follow(with_group(replace(policy_state, revision=9), 9))
    assert wait_until(lambda: (s := opener.current()) is not None and s.group == 9, timeout=5)
    assert [s.group for s in opener.opened] == [7, 9] and opener.opened[0].closed
    assert listener.report()["available"] is True
    listener.follow(with_group(replace(policy_state, revision=10), None))
    assert wait_until(lambda: all(s.closed for s in opener.opened), timeout=5)
    assert listener.report()["reason"] == NO_LOG_GROUP


def test_a_held_group_is_the_reason_until_it_is_released(
    listener: OffenderListener, opener: Opener, policy_state: DesiredState
) -> None:
    opener.held.add(7)
    listener.follow(with_group(policy_state, 7))
    assert wait_until(lambda: opener.attempts >= 2, timeout=5)  # retried, not given up
    report = listener.report()
    assert report["available"] is False
    assert report["reason"] == "nflog group 7 is bound by another process"
    opener.held.clear()  # the other listener went away
    assert wait_until(lambda: listener.report()["available"] is True, timeout=5)


def test_a_long_reason_is_cut_to_what_the_controller_takes(
    metrics: Metrics, policy_state: DesiredState
) -> None:
    def refuse(group: int, netns: str | None) -> FakeSource:
        raise NflogError(errno.EPERM, "x" * (REASON_MAX + 100))

    made = OffenderListener("gw-ns", OffenderBook(600), metrics, open_source=refuse, idle=0.01)
    made.follow(with_group(policy_state, 7))
    stop = threading.Event()
    thread = threading.Thread(target=made.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: made.report()["reason"].startswith("x"), timeout=5)
        assert made.report()["reason"] == "x" * REASON_MAX
    finally:
        stop.set()
        thread.join(timeout=5)


def test_overruns_and_lost_events_reach_the_metrics(
    listener: OffenderListener, opener: Opener, metrics: Metrics, policy_state: DesiredState
) -> None:
    listener.follow(with_group(policy_state, 7))
    assert wait_until(lambda: opener.current() is not None, timeout=5)
    source = opener.current()
    assert source is not None
    source.overruns, source.lost = 2, 260
    source.pending.put([])
    assert wait_until(lambda: metrics.nflog_overruns == 2, timeout=5)
    assert wait_until(lambda: metrics.nflog_lost_events == 260, timeout=5)
    text = metrics.render({})
    assert 'edgectl_agent_nflog_overruns_total{gateway="gw-a"} 2' in text
    assert 'edgectl_agent_nflog_lost_events_total{gateway="gw-a"} 260' in text
    assert "# TYPE edgectl_agent_offenders gauge" in text


def test_a_read_failure_rebinds(
    listener: OffenderListener, opener: Opener, policy_state: DesiredState
) -> None:
    listener.follow(with_group(policy_state, 7))
    assert wait_until(lambda: opener.current() is not None, timeout=5)
    first = opener.current()
    assert first is not None

    def broken() -> list[LogEvent]:
        raise OSError(errno.EBADF, "socket gone")

    first.read = broken  # type: ignore[method-assign]
    assert wait_until(lambda: len(opener.opened) == 2 and opener.current() is not None, timeout=5)
    assert first.closed
