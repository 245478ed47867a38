"""settings.track_non_mail = false: non-mail traffic skips conntrack, enforcement holds.

The mode exists for gateways that neither NAT nor filter statefully: it saves
the cost of a conntrack entry per non-mail connection.  These tests prove the
saving is real (no conntrack entries for held-open web connections) and that
nothing edgectl enforces is lost with it.
"""

from __future__ import annotations

import copy
import socket
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
    gateway_fixture,  # noqa: F401  (a fixture, used by name)
    poll,
    servers_fixture,  # noqa: F401
    tcp,
    with_profile,
    with_quarantines,
)

from edgectl.lab.probe import Outcome, connect
from edgectl.lab.topology import Topology

HELD_OPEN = 6


def untracked(policy: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(policy)
    out["settings"]["track_non_mail"] = False
    return out


def conntrack_entries(topology: Topology) -> int:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            topology.gateway_ns,
            "cat",
            "/proc/sys/net/netfilter/nf_conntrack_count",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


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


@pytest.mark.parametrize("track", [True, False], ids=["tracked", "untracked"])
def test_non_mail_connections_are_tracked_only_when_asked(
    topology: Topology, gateway: Gateway, held: list[socket.socket], track: bool
) -> None:
    policy = base_policy() if track else untracked(base_policy())
    gateway.apply(policy)
    before = conntrack_entries(topology)
    for _ in range(HELD_OPEN):
        assert _hold(topology, held, DYN4_A, MX4, 80) is Outcome.CONNECTED
    grown = conntrack_entries(topology) - before
    if track:
        assert grown >= HELD_OPEN
    else:
        assert grown == 0
    # Mail is always tracked: the concurrency and destination caps need it.
    assert _hold(topology, held, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert conntrack_entries(topology) - before >= grown + 1


def test_untracked_mode_enforces_op25b_and_every_quarantine_mode(
    topology: Topology, gateway: Gateway
) -> None:
    policy = with_quarantines(
        untracked(base_policy()),
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


@pytest.mark.parametrize("track", [True, False], ids=["tracked", "untracked"])
def test_a_block_cuts_an_open_web_flow_only_when_untracked(
    topology: Topology, gateway: Gateway, held: list[socket.socket], track: bool
) -> None:
    """Untracked packets are checked one by one, so a block applies mid-flow;
    tracked ones leave at the established shortcut and the flow goes on."""
    policy = base_policy() if track else untracked(base_policy())
    gateway.apply(policy)
    assert _hold(topology, held, DYN4_B, MX4, 80) is Outcome.CONNECTED
    gateway.apply(with_quarantines(policy, {"key": DYN4_B, "mode": "block"}))
    sock = held[-1]
    sock.sendall(b"x")
    acked = poll(lambda: _unacked(sock) == 0, deadline=1.5)
    assert acked is track


def test_untracked_mode_still_caps_concurrent_mail(
    topology: Topology, gateway: Gateway, held: list[socket.socket]
) -> None:
    policy = untracked(with_profile(base_policy(), new_per_minute=600, burst=100, concurrent=2))
    gateway.apply(policy)
    assert _hold(topology, held, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert _hold(topology, held, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert _hold(topology, held, DYN4_A, MX4, 587) is Outcome.RESET
