"""The NFLOG listener against the real kernel: block log events of real TCP connects.

A policy with ``settings.log_group`` makes every block rule log to that
nflog group; the listener binds the group inside the lab gateway's
namespace and must hear each refused connect with the subscriber's source
address, IPv4 and IPv6, and nothing of a subscriber that stayed under its
limit.  Port 587 (never OP25B) makes every refusal the rate limit's; port
25 from a dynamic pool makes it OP25B's.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_fixtures import (
    DYN4_A,
    DYN4_B,
    DYN6_A1,
    DYN6_A2,
    DYN6_A_KEY,
    DYN6_B,
    MX4,
    MX6,
    Gateway,
    base_policy,
    tcp,
    with_profile,
)

from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.daemon.offender_listener import OffenderListener
from edgectl.agent.daemon.offenders import OffenderBook
from edgectl.agent.nflog import NflogError, NflogSocket
from edgectl.lab import netns
from edgectl.lab.probe import Outcome
from edgectl.lab.topology import Topology
from edgectl.model import state_from_data
from edgectl.testing.wait import wait_until

GROUP = 7
BURST = 3
PORT = 587
READ_DEADLINE = 10.0  # the kernel flushes a batch within 1 s


def logging_policy(group: int = GROUP, revision: int = 1, **settings: Any) -> dict[str, Any]:
    """Rate limit with no refill (what passes is the burst), block log to ``group``."""
    policy = with_profile(base_policy(revision), new_per_minute=1, burst=BURST)
    policy["settings"].update(log_group=group, **settings)
    return policy


@pytest.fixture
def listener(gateway: Gateway) -> Iterator[NflogSocket]:
    sock = NflogSocket(GROUP, netns=gateway.ns)
    try:
        yield sock
    finally:
        sock.close()


def counts(book: OffenderBook) -> dict[tuple[str, str, str, bool], int]:
    return {(e["key"], e["kind"], e["policy"], e["shadow"]): e["count"] for e in book.entries()}


def heard(sock: NflogSocket, book: OffenderBook, expected: dict[Any, int]) -> bool:
    """Read until the book holds at least ``expected`` (bounded by READ_DEADLINE)."""

    def check() -> bool:
        book.record(sock.read())
        have = counts(book)
        return all(have.get(key, 0) >= count for key, count in expected.items())

    return wait_until(check, READ_DEADLINE, 0.0)


def test_refused_connects_are_heard_as_their_subscribers_keys(
    topology: Topology, gateway: Gateway, listener: NflogSocket
) -> None:
    policy = logging_policy()
    gateway.apply(policy)
    book = OffenderBook()
    book.follow(state_from_data(policy).pools)
    v4 = [tcp(topology, DYN4_A, MX4, PORT) for _ in range(BURST + 3)]
    assert v4 == [Outcome.CONNECTED] * BURST + [Outcome.RESET] * 3
    # Two addresses of one delegated /56 share one bucket: one subscriber, one key.
    v6 = [tcp(topology, DYN6_A1, MX6, PORT) for _ in range(BURST + 1)]
    v6.append(tcp(topology, DYN6_A2, MX6, PORT))
    assert v6 == [Outcome.CONNECTED] * BURST + [Outcome.RESET] * 2
    # Neighbours under their limits: never named.
    assert tcp(topology, DYN4_B, MX4, PORT) is Outcome.CONNECTED
    assert tcp(topology, DYN6_B, MX6, PORT) is Outcome.CONNECTED
    expected = {
        (f"{DYN4_A}/32", "ratelimit", "residential", False): 3,
        (DYN6_A_KEY, "ratelimit", "residential", False): 2,
    }
    assert heard(listener, book, expected), counts(book)
    assert counts(book) == expected  # exactly: nothing of B, nothing twice
    assert gateway.counter("rate_residential") == 5  # the same refusals, counted


def test_op25b_and_quarantine_events(
    topology: Topology, gateway: Gateway, listener: NflogSocket
) -> None:
    policy = logging_policy()
    policy["quarantines"] = [{"key": DYN4_B, "mode": "smtp", "account": "cust-b"}]
    gateway.apply(policy)
    book = OffenderBook()
    book.follow(state_from_data(policy).pools)
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
    assert tcp(topology, DYN6_B, MX6, 25) is Outcome.RESET
    assert tcp(topology, DYN4_B, MX4, PORT) is Outcome.RESET
    expected = {
        (f"{DYN4_A}/32", "op25b", "dyn4", False): 1,
        ("2001:db8:1000:200::/56", "op25b", "dyn6", False): 1,
        (f"{DYN4_B}/32", "quarantine", "smtp", False): 1,
    }
    assert heard(listener, book, expected), counts(book)


def test_a_held_group_is_refused_with_a_reason_and_freed_by_close(
    gateway: Gateway, listener: NflogSocket, fresh_prefix: str
) -> None:
    with pytest.raises(NflogError) as caught:
        NflogSocket(GROUP, netns=gateway.ns)
    # EPERM, not EBUSY: the kernel finds the group's instance owned by another portid.
    assert caught.value.errno == errno.EPERM
    assert f"nflog group {GROUP} in network namespace {gateway.ns} is bound by another" in str(
        caught.value
    )
    # The same group in another namespace is another instance: no conflict.
    other = f"{fresh_prefix}-other"
    netns.create(other)
    NflogSocket(GROUP, netns=other).close()
    listener.close()  # the kernel releases the group with the socket
    NflogSocket(GROUP, netns=gateway.ns).close()


def test_an_overrun_is_counted_and_survived(topology: Topology, gateway: Gateway) -> None:
    # Every refusal logged (a high log rate), into a receive queue too small for them.
    gateway.apply(logging_policy(log_per_second=10_000))
    attempts = 200
    with NflogSocket(GROUP, netns=gateway.ns, rcvbuf=4096) as sock:
        for _ in range(attempts):
            assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
        read = 0

        def all_accounted() -> bool:
            nonlocal read
            read += len(sock.read())
            return read + sock.lost == attempts

        assert wait_until(all_accounted, READ_DEADLINE, 0.0), (read, sock.lost, sock.overruns)
        assert sock.overruns >= 1 and sock.lost > 0
        # Still listening after the overrun.
        assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
        assert wait_until(lambda: len(sock.read()) == 1, READ_DEADLINE, 0.0)
        assert read + sock.lost == attempts


def test_the_listener_thread_follows_the_log_group(topology: Topology, gateway: Gateway) -> None:
    first = logging_policy()
    gateway.apply(first)
    metrics = Metrics("lab-gw")
    listener = OffenderListener(gateway.ns, OffenderBook(), metrics)
    stop = threading.Event()
    thread = threading.Thread(target=listener.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        listener.follow(state_from_data(first))
        assert wait_until(lambda: listener.report()["available"] is True, READ_DEADLINE)
        assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
        assert wait_until(lambda: metrics.offenders == 1, READ_DEADLINE)

        second = logging_policy(group=GROUP + 1, revision=2)
        gateway.apply(second)
        listener.follow(state_from_data(second))
        assert wait_until(lambda: listener.report()["available"] is True, READ_DEADLINE)
        assert tcp(topology, DYN4_B, MX4, 25) is Outcome.RESET
        assert wait_until(lambda: metrics.offenders == 2, READ_DEADLINE)
        # The old group is free again: another listener may take it.
        NflogSocket(GROUP, netns=gateway.ns).close()
        keys = {entry["key"] for entry in listener.report()["entries"]}
        assert keys == {f"{DYN4_A}/32", f"{DYN4_B}/32"}
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
