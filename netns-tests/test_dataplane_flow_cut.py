"""``block`` and ``smtp`` holds stop flows that were open before them (tracked mode).

Each test starts a real stream through the lab gateway, puts a hold in force
with ``edgectl apply`` and checks on the receiving side that nothing the held
subscriber's flow carried arrived after the command returned, while the
same kind of flow of a subscriber not held keeps going.  Streams: a UDP
flood, a TCP upload (on the submission port, so a mail flow) and a TCP
download (the held subscriber only sends ACKs; the server's packets, once
their conntrack entry is gone, would otherwise start a new entry in the
other direction and re-open the flow).

This module's MX listens on neither 587 nor 8080: the streams use them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

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
    SERVER_HOST,
    SOURCE_HOST,
    WEB_PORTS,
    Gateway,
    Servers,
    base_policy,
    listening,
    with_quarantines,
)

from edgectl.agent import conntrack
from edgectl.agent.netlink.nfsocket import NfNetlink
from edgectl.agent.netns import inside
from edgectl.lab.flows import Kind, Stream
from edgectl.lab.topology import Topology
from edgectl.testing.wait import wait_until

PORTS: dict[Kind, int] = {"udp": 5001, "tcp-up": 587, "tcp-down": 8080}
# How long after the hold the streams are watched (a third of a second of
# flooding at one chunk a millisecond).
WINDOW = 0.3
# The hold is in force and the flows cut when ``edgectl apply`` returns;
# what is already on the wire then arrives within microseconds.
IN_FLIGHT = 0.05


@pytest.fixture(scope="module", name="servers")
def servers_fixture(topology: Topology) -> Iterator[Servers]:
    with listening(topology, mx_ports=(25, 465, *WEB_PORTS)) as servers:
        yield servers


class Flows:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.open: list[Stream] = []

    def start(self, kind: Kind, src: str, dst: str, port_offset: int = 0) -> Stream:
        hosts = self.topology.hosts
        stream = Stream(
            kind,
            hosts[SOURCE_HOST[src]].ns,
            src,
            hosts[SERVER_HOST.get(dst, "mx")].ns,
            dst,
            PORTS[kind] + port_offset,
        )
        self.open.append(stream)
        assert wait_until(lambda: stream.snapshot()[0] > 0, 5.0), (
            f"{kind} {src}->{dst} never flowed"
        )
        return stream

    def close(self) -> None:
        for stream in self.open:
            stream.close()


@pytest.fixture
def flows(topology: Topology) -> Iterator[Flows]:
    made = Flows(topology)
    try:
        yield made
    finally:
        made.close()


def hold(gateway: Gateway, key: str, mode: str) -> float:
    """Put ``key`` in ``mode`` with the CLI; the moment the command returned."""
    gateway.apply(base_policy())
    gateway.apply(with_quarantines(base_policy(), {"key": key, "mode": mode}))
    return time.monotonic()


def arrived_after(moment: float, control: Stream, *streams: Stream) -> list[bool]:
    """For each stream: did anything arrive after ``moment`` (plus what was in flight)?

    Judged once ``control``, a flow nobody holds, has delivered something
    WINDOW after the moment: the gateway was forwarding all along, so a
    held stream that stayed silent meanwhile was cut.
    """
    assert wait_until(lambda: (control.snapshot()[1] or 0.0) > moment + WINDOW, 10.0)
    lasts = [stream.snapshot()[1] for stream in streams]
    return [last is not None and last > moment + IN_FLIGHT for last in lasts]


@pytest.mark.parametrize("kind", ["udp", "tcp-up", "tcp-down"])
def test_block_cuts_every_open_flow_of_the_key_only(
    gateway: Gateway, flows: Flows, kind: Kind
) -> None:
    gateway.apply(base_policy())
    held = flows.start(kind, DYN4_A, MX4)
    neighbour = flows.start(kind, DYN4_B, MX4, port_offset=1)
    done = hold(gateway, DYN4_A, "block")
    assert arrived_after(done, neighbour, held) == [False], f"{kind} of a blocked key goes on"
    assert gateway.counter("quarantine_block") > 0


@pytest.mark.parametrize("kind", ["udp", "tcp-up", "tcp-down"])
def test_ipv6_block_cuts_the_flows_of_every_address_in_the_delegated_prefix(
    gateway: Gateway, flows: Flows, kind: Kind
) -> None:
    gateway.apply(base_policy())
    first = flows.start(kind, DYN6_A1, MX6)
    second = flows.start(kind, DYN6_A2, MX6, port_offset=1)
    other = flows.start(kind, DYN6_B, MX6, port_offset=2)
    done = hold(gateway, DYN6_A_KEY, "block")
    assert arrived_after(done, other, first, second) == [False, False]


def test_smtp_hold_cuts_open_mail_flows_and_leaves_the_rest(gateway: Gateway, flows: Flows) -> None:
    gateway.apply(base_policy())
    mail = flows.start("tcp-up", DYN4_A, MX4)
    web = flows.start("tcp-down", DYN4_A, MX4)
    stream = flows.start("udp", DYN4_A, MX4)
    done = hold(gateway, DYN4_A, "smtp")
    assert arrived_after(done, stream, mail, web) == [False, True]


def test_the_stats_request_counts_this_namespace_only(gateway: Gateway, flows: Flows) -> None:
    """``conntrack.entries`` (the check that spares a cut its dump) sees the
    gateway's flows, and a namespace beside it that tracks nothing says 0."""
    gateway.apply(base_policy())
    flows.start("tcp-up", DYN4_A, MX4)
    with inside(gateway.ns):
        sock = NfNetlink()
    with sock:
        assert wait_until(lambda: (conntrack.entries(sock) or 0) > 0, 5.0)
    quiet = gateway.topology.hosts["mx"].ns  # the flow ends here, but no ruleset tracks it
    with inside(quiet):
        sock = NfNetlink()
    with sock:
        assert conntrack.entries(sock) == 0


def test_a_policy_applied_onto_no_table_cuts_its_blocked_keys_flows(
    gateway: Gateway, flows: Flows
) -> None:
    """``apply -f`` of exact keys onto no table writes the kernel from key columns
    (no model built); the flows its holds stop are cut all the same."""
    gateway.apply(base_policy())
    held = flows.start("udp", DYN4_A, MX4)
    neighbour = flows.start("udp", DYN4_B, MX4, port_offset=1)
    gateway.nft("delete", "table", "inet", "edgectl")
    gateway.apply(with_quarantines(base_policy(), {"key": DYN4_A, "mode": "block"}))
    done = time.monotonic()
    assert arrived_after(done, neighbour, held) == [False], "a blocked key's flood goes on"
