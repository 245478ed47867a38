"""settings.track_non_mail = false: non-mail traffic skips conntrack, enforcement holds.

The mode saves the cost of a conntrack entry per non-mail connection.  With
a concurrency cap (ct count) on a served pool, mail stays tracked and the rest
is notracked; without one, the table holds no ct expression and nothing is
tracked at all.  In both, a TCP packet that does not open a connection
leaves at the first rule.  These tests prove the saving is real (no conntrack entries
for held-open connections) and that nothing edgectl enforces is lost with it.
"""

from __future__ import annotations

import copy
import re
import socket
import struct
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_fixtures import (
    DYN4_A,
    DYN4_B,
    DYN4_C,
    DYN6_A1,
    MX4,
    MX6,
    RELAY4,
    SOURCE_HOST,
    Gateway,
    base_policy,
    tcp,
    with_profile,
    with_quarantines,
)

from edgectl.lab import netns
from edgectl.lab.probe import Outcome, connect
from edgectl.lab.topology import Topology
from edgectl.testing.wait import wait_until

HELD_OPEN = 6


def untracked(policy: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(policy)
    out["settings"]["track_non_mail"] = False
    return out


def _in_gateway(topology: Topology, *argv: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", topology.gateway_ns, *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def conntrack_entries(topology: Topology) -> int:
    return int(_in_gateway(topology, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"))


@pytest.fixture
def held(topology: Topology) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _hold(topology: Topology, held: list[socket.socket], src: str, dst: str, port: int) -> Outcome:
    host = topology.hosts[SOURCE_HOST[src]]
    outcome, sock = connect(host.ns, dst, port, src=src, timeout=2.0, keep_open=True)
    if sock is not None:
        held.append(sock)
    return outcome


def capped(policy: dict[str, Any]) -> dict[str, Any]:
    return with_profile(policy, new_per_minute=600, burst=100, concurrent=50)


@pytest.mark.parametrize("track", [True, False], ids=["tracked", "untracked"])
def test_non_mail_connections_are_tracked_only_when_asked(
    topology: Topology, gateway: Gateway, held: list[socket.socket], track: bool
) -> None:
    policy = capped(base_policy())
    gateway.apply(policy if track else untracked(policy))
    before = conntrack_entries(topology)
    for _ in range(HELD_OPEN):
        assert _hold(topology, held, DYN4_A, MX4, 80) is Outcome.CONNECTED
    grown = conntrack_entries(topology) - before
    if track:
        assert grown >= HELD_OPEN
    else:
        assert grown == 0
    # With a concurrency cap mail is tracked in both modes: ct count needs it.
    assert _hold(topology, held, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert conntrack_entries(topology) - before >= grown + 1


def test_untracked_without_caps_tracks_nothing_and_still_limits_the_rate(
    topology: Topology, gateway: Gateway, held: list[socket.socket]
) -> None:
    burst = 3
    policy = untracked(with_profile(base_policy(), new_per_minute=1, burst=burst))
    gateway.apply(policy)
    listed = _in_gateway(topology, "nft", "list", "table", "inet", "edgectl")
    # No ct expression in the table: the kernel registers no conntrack hooks.
    assert re.search(r"\bct |notrack", listed) is None, listed
    before = conntrack_entries(topology)
    assert _hold(topology, held, DYN4_A, MX4, 80) is Outcome.CONNECTED
    outcomes = [_hold(topology, held, DYN4_A, MX4, 587) for _ in range(burst + 1)]
    # The held-open mail connections were not tracked either, and the first
    # SYN of each one took a token all the same.
    assert outcomes == [Outcome.CONNECTED] * burst + [Outcome.RESET]
    assert conntrack_entries(topology) == before
    assert gateway.counter("rate_residential") == 1
    # An open mail flow goes on: only SYNs meet the meter.
    sock = held[1]
    sock.sendall(b"x")
    assert wait_until(lambda: _unacked(sock) == 0, timeout=2.0)
    # The neighbour's bucket is its own.
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.CONNECTED


@pytest.mark.parametrize("caps", [False, True], ids=["no-conntrack", "notrack"])
def test_untracked_mode_enforces_op25b_and_every_quarantine_mode(
    topology: Topology, gateway: Gateway, caps: bool
) -> None:
    policy = with_quarantines(
        untracked(capped(base_policy()) if caps else base_policy()),
        {"key": DYN4_B, "mode": "smtp"},
        {"key": DYN4_C, "mode": "block"},
    )
    gateway.apply(policy)
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
    assert tcp(topology, DYN6_A1, MX6, 25) is Outcome.RESET
    assert tcp(topology, DYN4_A, RELAY4, 25) is Outcome.CONNECTED
    assert tcp(topology, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert tcp(topology, DYN4_A, MX4, 80) is Outcome.CONNECTED
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.RESET
    assert tcp(topology, DYN4_B, MX4, 80) is Outcome.CONNECTED
    assert tcp(topology, DYN4_C, MX4, 80, expect_drop=True) is Outcome.TIMEOUT


def _unacked(sock: socket.socket) -> int:
    # struct tcp_info: u32 tcpi_unacked at byte 24.
    return int.from_bytes(
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[24:28], "little"
    )


@pytest.mark.parametrize("mode", ["tracked", "notrack", "no-conntrack"])
@pytest.mark.parametrize("quarantine", ["block", "walled-garden"])
def test_what_a_quarantine_does_to_a_flow_already_open(
    topology: Topology, gateway: Gateway, held: list[socket.socket], mode: str, quarantine: str
) -> None:
    """An open flow survives walled-garden in every mode (tracked, it leaves
    at the established shortcut; untracked, on its TCP flags).  Block stops
    it in every mode: tracked, the agent deletes the flow's conntrack entry;
    untracked, block drops every packet."""
    policy = {
        "tracked": base_policy(),
        "notrack": untracked(capped(base_policy())),
        "no-conntrack": untracked(base_policy()),
    }[mode]
    gateway.apply(policy)
    assert _hold(topology, held, DYN4_B, MX4, 80) is Outcome.CONNECTED
    gateway.apply(with_quarantines(policy, {"key": DYN4_B, "mode": quarantine}))
    sock = held[-1]
    sock.sendall(b"x")
    goes_on = quarantine != "block"
    assert wait_until(lambda: _unacked(sock) == 0, timeout=1.5) is goes_on
    # New connections are stopped in every mode.
    assert tcp(topology, DYN4_B, MX4, 80, expect_drop=True) is Outcome.TIMEOUT


def _bare_acks(topology: Topology, src: str, dst: str, port: int, count: int) -> None:
    """``count`` TCP ACKs that belong to no connection, as a flood would send them."""
    header = struct.pack("!HHIIBBHHH", 40000, port, 1, 1, 5 << 4, 0x10, 1024, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, 20)
    data = pseudo + header
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    segment = header[:16] + struct.pack("!H", ~total & 0xFFFF) + header[18:]
    with netns.in_netns(topology.hosts[SOURCE_HOST[src]].ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    with sock:
        sock.bind((src, 0))
        for _ in range(count):
            sock.sendto(segment, (dst, 0))


@pytest.mark.parametrize("caps", [False, True], ids=["no-conntrack", "notrack"])
def test_untracked_block_drops_packets_that_open_nothing(
    topology: Topology, gateway: Gateway, caps: bool
) -> None:
    """The first-rule exit for non-opening TCP packets is not for blocked subscribers."""
    policy = untracked(capped(base_policy()) if caps else base_policy())
    gateway.apply(with_quarantines(policy, {"key": DYN4_B, "mode": "block"}))
    _bare_acks(topology, DYN4_A, MX4, 80, 5)  # not held: passes uncounted
    assert gateway.counter("quarantine_block") == 0
    _bare_acks(topology, DYN4_B, MX4, 80, 5)
    assert wait_until(lambda: gateway.counter("quarantine_block") == 5, timeout=2.0)


def test_untracked_mode_still_caps_concurrent_mail(
    topology: Topology, gateway: Gateway, held: list[socket.socket]
) -> None:
    policy = untracked(with_profile(base_policy(), new_per_minute=600, burst=100, concurrent=2))
    gateway.apply(policy)
    assert _hold(topology, held, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert _hold(topology, held, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert _hold(topology, held, DYN4_A, MX4, 587) is Outcome.RESET
