"""Quarantines through the lab gateway: each mode, expiry in the kernel, the delta path.

smtp refuses mail ports with a TCP reset (RESET); walled-garden and block drop
(TIMEOUT).  Established flows are accepted before any quarantine, so a
quarantine holds new connections only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from gateway_fixtures import (
    DROP_TIMEOUT,
    DYN4_A,
    DYN4_B,
    DYN4_C,
    DYN6_A1,
    DYN6_A2,
    DYN6_A_KEY,
    DYN6_B,
    MAIL_PORTS,
    MX4,
    MX6,
    PORTAL4,
    PORTAL6,
    RELAY4,
    RESOLVER4,
    RESOLVER6,
    SOURCE_HOST,
    STATIC4,
    Gateway,
    Probe,
    Servers,
    accepted_reaches,
    base_policy,
    outcomes,
    tcp,
    with_quarantines,
)

from edgectl.lab.probe import Outcome, connect, udp_query
from edgectl.lab.topology import Topology
from edgectl.testing.wait import wait_until


def udp53(topology: Topology, src: str, dst: str, *, expect_drop: bool = False) -> Outcome:
    host = topology.hosts[SOURCE_HOST[src]]
    return udp_query(host.ns, dst, 53, src=src, timeout=DROP_TIMEOUT if expect_drop else 2.0)


def dropped(topology: Topology, src: str, dst: str, port: int) -> bool:
    return tcp(topology, src, dst, port, expect_drop=True) is Outcome.TIMEOUT


def test_smtp_quarantine_resets_mail_ports_only(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    policy = with_quarantines(
        base_policy(),
        {"key": DYN4_A, "mode": "smtp", "account": "cust-1001"},
        {"key": DYN6_A_KEY, "mode": "smtp", "account": "cust-2001"},
    )
    gateway.apply(policy)
    for port in MAIL_PORTS:
        assert tcp(topology, DYN4_A, MX4, port) is Outcome.RESET, port
        assert tcp(topology, DYN4_A, RELAY4, port) is Outcome.RESET, port
        # Both /128s of the quarantined /56.
        assert tcp(topology, DYN6_A1, MX6, port) is Outcome.RESET, port
        assert tcp(topology, DYN6_A2, MX6, port) is Outcome.RESET, port
    assert gateway.counter("quarantine_smtp") == 4 * len(MAIL_PORTS)
    # Everything but mail is fine.
    assert tcp(topology, DYN4_A, MX4, 80) is Outcome.CONNECTED
    assert tcp(topology, DYN6_A1, MX6, 80) is Outcome.CONNECTED
    assert udp53(topology, DYN4_A, RESOLVER4) is Outcome.ANSWERED
    # Neighbours are not held: another address, another /56.
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.CONNECTED
    assert tcp(topology, DYN6_B, MX6, 587) is Outcome.CONNECTED


def test_walled_garden_allows_dns_and_portal_only(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    policy = with_quarantines(
        base_policy(),
        {"key": DYN4_A, "mode": "walled-garden"},
        {"key": DYN6_A_KEY, "mode": "walled-garden"},
    )
    gateway.apply(policy)
    allowed: list[Probe] = []
    refused: list[Probe] = [(DYN4_A, RELAY4, 25)]
    for src, resolver, portal, mx in (
        (DYN4_A, RESOLVER4, PORTAL4, MX4),
        (DYN6_A2, RESOLVER6, PORTAL6, MX6),
    ):
        # DNS to the resolvers, UDP and TCP; the notice portal, HTTP and HTTPS.
        allowed += [(src, resolver, "udp53"), (src, resolver, 53)]
        allowed += [(src, portal, 80), (src, portal, 443)]
        # Nothing else: the web elsewhere, mail (even submission), DNS elsewhere,
        # the resolver on another port.
        refused += [(src, mx, 80), (src, mx, 587), (src, mx, "udp53"), (src, resolver, 80)]
    answered = outcomes(topology, allowed, expect_drop=False)
    assert answered == {
        p: Outcome.ANSWERED if p[2] == "udp53" else Outcome.CONNECTED for p in allowed
    }
    assert outcomes(topology, refused, expect_drop=True) == dict.fromkeys(refused, Outcome.TIMEOUT)
    assert gateway.counter("quarantine_walled_garden") >= len(refused)
    # The neighbour browses freely.
    assert tcp(topology, DYN4_B, MX4, 80) is Outcome.CONNECTED
    assert tcp(topology, DYN6_B, MX6, 80) is Outcome.CONNECTED


def test_block_quarantine_drops_everything(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    policy = with_quarantines(
        base_policy(),
        {"key": DYN4_A, "mode": "block"},
        {"key": DYN6_A_KEY, "mode": "block"},
    )
    gateway.apply(policy)
    refused: list[Probe] = []
    for src, resolver, portal, mx in (
        (DYN4_A, RESOLVER4, PORTAL4, MX4),
        (DYN6_A1, RESOLVER6, PORTAL6, MX6),
    ):
        refused += [(src, resolver, "udp53"), (src, resolver, 53), (src, portal, 80)]
        refused += [(src, mx, 80), (src, mx, 587), (src, mx, 25)]
    assert outcomes(topology, refused, expect_drop=True) == dict.fromkeys(refused, Outcome.TIMEOUT)
    assert tcp(topology, DYN4_B, MX4, 80) is Outcome.CONNECTED
    assert tcp(topology, DYN6_B, MX6, 80) is Outcome.CONNECTED
    assert gateway.counter("quarantine_block") >= len(refused)


def test_quarantine_of_a_static_subscriber_is_enforced(
    topology: Topology, gateway: Gateway
) -> None:
    gateway.apply(with_quarantines(base_policy(), {"key": STATIC4, "mode": "smtp"}))
    assert tcp(topology, STATIC4, MX4, 25) is Outcome.RESET
    assert tcp(topology, STATIC4, MX4, 80) is Outcome.CONNECTED


@pytest.mark.parametrize("path", ["full", "delta"])
def test_quarantine_with_expiry_lapses_in_the_kernel(
    topology: Topology, gateway: Gateway, path: str
) -> None:
    before = base_policy()
    if path == "delta":
        gateway.apply(before)
    # Long enough for `edgectl apply` (a fresh process) and the first probe on
    # a loaded machine: at 3 s the hold had lapsed before it was checked.
    lifetime = 6.0
    expires = datetime.now(UTC) + timedelta(seconds=lifetime)
    policy = with_quarantines(
        before, {"key": DYN4_B, "mode": "smtp", "expires": expires.isoformat()}
    )
    run = gateway.apply(policy)
    assert f"{path} sync" in run.out, str(run)
    checked = datetime.now(UTC)
    assert checked < expires - timedelta(seconds=1), f"apply took until {checked}, too late"
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.RESET
    assert DYN4_B in gateway.nft("list", "set", "inet", "edgectl", "q_smtp_4").stdout
    # Nobody runs edgectl from here on: the kernel's element timeout does it.
    assert wait_until(lambda: tcp(topology, DYN4_B, MX4, 587) is Outcome.CONNECTED, lifetime + 10)
    lapsed_at = datetime.now(UTC)
    # The timeout is rounded up to whole seconds, never down.
    assert lapsed_at >= expires - timedelta(seconds=0.2), (lapsed_at, expires)
    assert DYN4_B not in gateway.nft("list", "set", "inet", "edgectl", "q_smtp_4").stdout
    # A lapsed quarantine is not drift: the kernel did what the policy said.
    run = gateway.plan(policy)
    assert run.code == 0, str(run)


def test_changing_a_quarantine_mode_is_a_delta_and_is_enforced(
    topology: Topology, gateway: Gateway
) -> None:
    policy = with_quarantines(base_policy(), {"key": DYN4_B, "mode": "smtp"})
    gateway.apply(policy)
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.RESET
    assert tcp(topology, DYN4_B, MX4, 80) is Outcome.CONNECTED
    for mode, portal, web in (
        ("block", Outcome.TIMEOUT, Outcome.TIMEOUT),
        ("walled-garden", Outcome.CONNECTED, Outcome.TIMEOUT),
        ("smtp", Outcome.CONNECTED, Outcome.CONNECTED),
    ):
        policy = dict(policy, revision=policy["revision"] + 1)
        policy["quarantines"] = [{"key": DYN4_B, "mode": mode}]
        run = gateway.apply(policy)
        assert "delta sync" in run.out, str(run)
        probes: list[Probe] = [(DYN4_B, PORTAL4, 80), (DYN4_B, MX4, 80)]
        got = outcomes(topology, probes, expect_drop=True)
        assert got == {probes[0]: portal, probes[1]: web}, mode
        # One element per key: its mode's set holds it, no other set does.
        listed = gateway.ruleset(stateless=True)
        holders = [
            block.split(" {")[0]
            for block in listed.split("\tset ")[1:]
            if DYN4_B in block.split("\n\t}")[0]
        ]
        assert holders == [f"q_{mode.replace('-', '_')}_4"], (mode, listed)
    assert gateway.plan(policy).code == 0


def test_prefix_quarantines_hold_every_subscriber_inside(
    topology: Topology, gateway: Gateway
) -> None:
    # Keys that are not one subscriber: an IPv4 /30 and an IPv6 /64 inside a /56.
    policy = with_quarantines(
        base_policy(),
        {"key": "100.64.0.8/30", "mode": "smtp"},  # .10 and .11, not .12
        {"key": "2001:db8:1000:100::/64", "mode": "block"},  # ::10 and ::11, not 200::10
    )
    gateway.apply(policy)
    assert tcp(topology, DYN4_A, MX4, 587) is Outcome.RESET
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.RESET
    assert tcp(topology, DYN4_C, MX4, 587) is Outcome.CONNECTED
    refused: list[Probe] = [(DYN6_A1, MX6, 80), (DYN6_A2, MX6, 80)]
    assert outcomes(topology, refused, expect_drop=True) == dict.fromkeys(refused, Outcome.TIMEOUT)
    assert tcp(topology, DYN6_B, MX6, 80) is Outcome.CONNECTED
    assert gateway.plan(policy).code == 0
    # Lifting one of them frees exactly its subscribers.
    lifted = dict(policy, revision=policy["revision"] + 1, quarantines=policy["quarantines"][1:])
    gateway.apply(lifted)
    assert tcp(topology, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert dropped(topology, DYN6_A1, MX6, 80)
    assert gateway.plan(lifted).code == 0


def test_adding_a_quarantine_is_a_delta_and_is_enforced(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    first = with_quarantines(base_policy(), {"key": DYN6_A_KEY, "mode": "smtp"})
    gateway.apply(first)
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.CONNECTED
    # A flow open before the block is cut (its conntrack entry deleted).
    mx_host = topology.hosts[SOURCE_HOST[DYN4_B]]
    outcome, flow = connect(mx_host.ns, MX4, 80, src=DYN4_B, timeout=2.0, keep_open=True)
    assert outcome is Outcome.CONNECTED and flow is not None
    try:
        assert wait_until(lambda: servers.mx.open_connections(DYN4_B, port=80) == 1, 2.0)
        generation = gateway.generation()

        second = with_quarantines(first, {"key": DYN4_B, "mode": "block", "account": "c-7"})
        run = gateway.apply(second)
        assert "delta sync" in run.out, str(run)
        assert "full sync" not in run.out, str(run)
        # One commit, the element add: not a table rebuild.
        assert gateway.generation() == generation + 1
        assert dropped(topology, DYN4_B, MX4, 80)
        assert dropped(topology, DYN4_B, MX4, 587)
        # The earlier quarantine still holds; the other subscriber is free.
        assert tcp(topology, DYN6_A1, MX6, 587) is Outcome.RESET
        assert tcp(topology, DYN4_A, MX4, 587) is Outcome.CONNECTED
        flow.sendall(b"QUIT\r\n")
    finally:
        flow.close()
    # The flow open before the block was cut: its FIN does not reach the MX.
    assert not wait_until(lambda: servers.mx.open_connections(DYN4_B, port=80) == 0, 1.0)

    # Lifting it is a delta too, and traffic comes back.
    third = dict(first, revision=second["revision"] + 1)
    run = gateway.apply(third)
    assert "delta sync" in run.out, str(run)
    # Lifted: the closed flow's resent FIN gets through at last.
    assert wait_until(lambda: servers.mx.open_connections(DYN4_B, port=80) == 0, 10.0)
    accepted = servers.mx.accepted(DYN4_B, port=80)
    assert tcp(topology, DYN4_B, MX4, 80) is Outcome.CONNECTED
    assert accepted_reaches(servers.mx, DYN4_B, 80, accepted + 1)
    assert tcp(topology, DYN6_A1, MX6, 587) is Outcome.RESET
    run = gateway.plan(third)
    assert run.code == 0, str(run)
