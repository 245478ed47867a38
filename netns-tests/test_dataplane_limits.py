"""Per-subscriber mail limits through the lab gateway: token bucket, concurrency, destination.

Limits are exercised on the submission port 587 of the outside MX, which OP25B
never touches, so every refusal here is the limit's.  The exact semantics,
found by experiment with nftables 1.0.6 (``limit rate over R/minute burst B
packets`` in a dynamic set, ``ct count over N``):

* a fresh subscriber gets exactly ``burst`` new connections, the next one is
  reset; refused SYNs take no token, and one token comes back every
  ``60 / new_per_minute`` seconds;
* ``ct count over N`` lets exactly N connections be open at once (the first SYN
  over it is held back once and its resend judged: see render._deferral_rules);
  a closed one frees its slot (conncount drops TIME_WAIT/CLOSE entries when
  it next looks).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from gateway_fixtures import (
    ANSWER_TIMEOUT,
    DYN4_A,
    DYN4_B,
    DYN6_A1,
    DYN6_A2,
    DYN6_B,
    MX4,
    MX4_SECOND,
    MX6,
    POLL_DEADLINE,
    RELAY4,
    SOURCE_HOST,
    Gateway,
    Servers,
    accepted_reaches,
    base_policy,
    tcp,
    with_profile,
)

from edgectl.lab.probe import Outcome, connect
from edgectl.lab.topology import Topology
from edgectl.testing.wait import wait_until

PORT = 587
# So slow that no token comes back while a test runs: what passes is the burst.
NO_REFILL = 1


class Held:
    """Connections a test keeps open; all closed at the end whatever happens."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.sockets: list[socket.socket] = []

    def open(self, src: str, dst: str, port: int = PORT) -> Outcome:
        host = self.topology.hosts[SOURCE_HOST[src]]
        outcome, sock = connect(host.ns, dst, port, src=src, timeout=ANSWER_TIMEOUT, keep_open=True)
        if sock is not None:
            self.sockets.append(sock)
        return outcome

    def close_one(self) -> None:
        self.sockets.pop(0).close()

    def close_all(self) -> None:
        while self.sockets:
            self.sockets.pop().close()


@pytest.fixture
def held(topology: Topology) -> Iterator[Held]:
    connections = Held(topology)
    try:
        yield connections
    finally:
        connections.close_all()


@pytest.mark.parametrize(("per_minute", "burst"), [(NO_REFILL, 3), (10, 5)])
def test_rate_limit_allows_exactly_burst_then_resets_other_subscriber_unaffected(
    topology: Topology, gateway: Gateway, servers: Servers, per_minute: int, burst: int
) -> None:
    gateway.apply(with_profile(base_policy(), new_per_minute=per_minute, burst=burst))
    accepted = servers.mx.accepted(DYN4_A, port=PORT)
    outcomes = [tcp(topology, DYN4_A, MX4, PORT) for _ in range(burst + 3)]
    assert outcomes == [Outcome.CONNECTED] * burst + [Outcome.RESET] * 3
    assert accepted_reaches(servers.mx, DYN4_A, PORT, accepted + burst)
    assert gateway.counter("rate_residential") == 3
    # The bucket is per subscriber: the neighbour has a full one of its own.
    outcomes = [tcp(topology, DYN4_B, MX4, PORT) for _ in range(burst + 1)]
    assert outcomes == [Outcome.CONNECTED] * burst + [Outcome.RESET]
    # Every mail port shares the bucket (the relay on 25 too); others do not.
    assert tcp(topology, DYN4_A, RELAY4, 25) is Outcome.RESET
    assert tcp(topology, DYN4_A, MX4, 465) is Outcome.RESET
    assert tcp(topology, DYN4_A, MX4, 80) is Outcome.CONNECTED


def test_rate_limit_refills_one_token_per_interval(topology: Topology, gateway: Gateway) -> None:
    # 60/minute: one token a second.  Refused attempts while empty take none.
    gateway.apply(with_profile(base_policy(), new_per_minute=60, burst=2))
    start = time.monotonic()
    assert [tcp(topology, DYN4_A, MX4, PORT) for _ in range(3)] == [
        Outcome.CONNECTED,
        Outcome.CONNECTED,
        Outcome.RESET,
    ]
    assert wait_until(lambda: tcp(topology, DYN4_A, MX4, PORT) is Outcome.CONNECTED, 5.0, 0.05)
    refilled_after = time.monotonic() - start
    # Not before a second has passed; and not much later either, although the
    # poll made many refused attempts meanwhile: refusals take no token.
    assert 0.9 <= refilled_after < 2.5, f"a token came back after {refilled_after:.2f}s, not ~1s"
    # Exactly one token came back, however many refused attempts the poll made.
    assert tcp(topology, DYN4_A, MX4, PORT) is Outcome.RESET


def test_ipv6_addresses_of_one_delegated_56_share_one_bucket(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    burst = 3
    gateway.apply(with_profile(base_policy(), new_per_minute=NO_REFILL, burst=burst))
    outcomes = [tcp(topology, DYN6_A1, MX6, PORT) for _ in range(burst + 1)]
    assert outcomes == [Outcome.CONNECTED] * burst + [Outcome.RESET]
    # Another /128 of the same /56 is the same subscriber: nothing left.
    assert tcp(topology, DYN6_A2, MX6, PORT) is Outcome.RESET
    assert accepted_reaches(servers.mx, DYN6_A2, PORT, 0)
    # Another /56 is another subscriber with a bucket of its own.
    outcomes = [tcp(topology, DYN6_B, MX6, PORT) for _ in range(burst + 1)]
    assert outcomes == [Outcome.CONNECTED] * burst + [Outcome.RESET]


# A pair cap at or above the concurrency cap is enforced by that cap alone:
# one ct count (render._destination_cap) refuses the same connections.
@pytest.mark.parametrize("per_destination", [None, 3, 5])
def test_concurrent_cap_refuses_one_over_and_frees_a_slot_on_close(
    topology: Topology,
    gateway: Gateway,
    servers: Servers,
    held: Held,
    per_destination: int | None,
) -> None:
    cap = 3
    pair = {} if per_destination is None else {"per_destination": per_destination}
    policy = with_profile(base_policy(), new_per_minute=10_000, burst=1_000, concurrent=cap, **pair)
    gateway.apply(policy)
    table = gateway.table("edgectl")
    assert "@conc_dyn4_4" in table
    assert "dest_dyn4" not in table
    for _ in range(cap):
        assert held.open(DYN4_A, MX4) is Outcome.CONNECTED
    assert wait_until(lambda: servers.mx.open_connections(DYN4_A, port=PORT) == cap, 2.0)
    assert held.open(DYN4_A, MX4) is Outcome.RESET
    # To another destination too: the cap is per subscriber, over all mail.
    assert held.open(DYN4_A, MX4_SECOND) is Outcome.RESET
    assert gateway.counter("concurrent_residential") == 2
    if per_destination is not None:
        assert gateway.counter("destination_residential") == 0
    # Another subscriber has its own slots.
    assert held.open(DYN4_B, MX4) is Outcome.CONNECTED

    held.close_one()  # one of DYN4_A's
    assert wait_until(lambda: held.open(DYN4_A, MX4) is Outcome.CONNECTED, POLL_DEADLINE)
    # That took the freed slot: the cap holds again.
    assert held.open(DYN4_A, MX4) is Outcome.RESET
    assert wait_until(lambda: servers.mx.open_connections(DYN4_A, port=PORT) == cap, 2.0)


def test_per_destination_cap_limits_one_pair_only(
    topology: Topology, gateway: Gateway, servers: Servers, held: Held
) -> None:
    cap = 2
    policy = with_profile(
        base_policy(), new_per_minute=10_000, burst=1_000, concurrent=10, per_destination=cap
    )
    gateway.apply(policy)
    accepted = servers.mx.accepted(DYN4_A, port=PORT)
    for _ in range(cap):
        assert held.open(DYN4_A, MX4) is Outcome.CONNECTED
    assert held.open(DYN4_A, MX4) is Outcome.RESET
    assert gateway.counter("destination_residential") == 1
    assert gateway.counter("concurrent_residential") == 0
    # Same subscriber, another destination; same destination, another subscriber.
    for _ in range(cap):
        assert held.open(DYN4_A, MX4_SECOND) is Outcome.CONNECTED
    assert held.open(DYN4_B, MX4) is Outcome.CONNECTED
    assert accepted_reaches(servers.mx, DYN4_A, PORT, accepted + 2 * cap)

    # Closing one of the pair frees it again.
    held.close_one()
    assert wait_until(lambda: held.open(DYN4_A, MX4) is Outcome.CONNECTED, POLL_DEADLINE)
    assert held.open(DYN4_A, MX4) is Outcome.RESET


def test_shadow_rate_limit_counts_but_lets_through(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    burst, attempts = 2, 6
    policy = with_profile(base_policy(), new_per_minute=NO_REFILL, burst=burst, shadow=True)
    gateway.apply(policy)
    accepted = servers.mx.accepted(DYN4_A, port=PORT)
    outcomes = [tcp(topology, DYN4_A, MX4, PORT) for _ in range(attempts)]
    assert outcomes == [Outcome.CONNECTED] * attempts
    assert accepted_reaches(servers.mx, DYN4_A, PORT, accepted + attempts)
    # Counted exactly as enforcement would have refused, read the operator's way.
    assert gateway.shown_counter("rate_residential") == attempts - burst


def test_ipv6_concurrent_cap_counts_the_whole_delegated_56(
    topology: Topology, gateway: Gateway, held: Held
) -> None:
    cap = 3
    policy = with_profile(base_policy(), new_per_minute=10_000, burst=1_000, concurrent=cap)
    gateway.apply(policy)
    assert held.open(DYN6_A1, MX6) is Outcome.CONNECTED
    assert held.open(DYN6_A1, MX6) is Outcome.CONNECTED
    assert held.open(DYN6_A2, MX6) is Outcome.CONNECTED
    # Three open in the /56, from two addresses: both are at the cap.
    assert held.open(DYN6_A1, MX6) is Outcome.RESET
    assert held.open(DYN6_A2, MX6) is Outcome.RESET
    for _ in range(cap):
        assert held.open(DYN6_B, MX6) is Outcome.CONNECTED
    assert held.open(DYN6_B, MX6) is Outcome.RESET
