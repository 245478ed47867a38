"""OP25B through the lab gateway, with real TCP: who may reach port 25 where."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from gateway_fixtures import (
    DYN4_A,
    DYN4_B,
    DYN4_C,
    DYN6_A1,
    DYN6_A2,
    DYN6_B,
    MX4,
    MX6,
    RELAY4,
    RELAY6,
    STATIC4,
    STATIC6,
    Gateway,
    Servers,
    accepted_reaches,
    base_policy,
    tcp,
    with_profile,
)

from edgectl.lab.probe import Outcome
from edgectl.lab.topology import Topology
from edgectl.testing.wait import wait_until


def test_baseline_without_policy_everyone_reaches_mx_25(
    topology: Topology, gateway: Gateway
) -> None:
    # The control: without edgectl's table every RESET below is edgectl's doing.
    assert not gateway.has_table("edgectl")
    for src, dst in ((DYN4_A, MX4), (DYN6_A1, MX6), (STATIC4, MX4)):
        assert tcp(topology, src, dst, 25) is Outcome.CONNECTED, src


def test_dynamic_to_outside_25_is_reset_submission_ports_connect(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    gateway.apply(base_policy())
    before = gateway.counter("op25b_dyn4")
    accepted = servers.mx.accepted(DYN4_A, port=25)
    for src in (DYN4_A, DYN4_B, DYN4_C):
        assert tcp(topology, src, MX4, 25) is Outcome.RESET, src
    # The reset came from the gateway: the MX never saw a connection.
    assert accepted_reaches(servers.mx, DYN4_A, 25, accepted)
    assert gateway.counter("op25b_dyn4") == before + 3
    # RFC 6409 / RFC 8314: submission is never OP25B's business.
    for port in (587, 465):
        assert tcp(topology, DYN4_A, MX4, port) is Outcome.CONNECTED, port
    # Non-mail traffic is untouched.
    assert tcp(topology, DYN4_A, MX4, 80) is Outcome.CONNECTED


def test_dynamic_reaches_the_isp_relay_on_25(topology: Topology, gateway: Gateway) -> None:
    gateway.apply(base_policy())
    assert tcp(topology, DYN4_A, RELAY4, 25) is Outcome.CONNECTED
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET


@pytest.mark.parametrize("rate_limited", [False, True], ids=["plain", "rate-limited"])
def test_static_pool_reaches_outside_25(
    topology: Topology, gateway: Gateway, rate_limited: bool
) -> None:
    policy = base_policy()
    if rate_limited:
        # A static pool with limits has a chain of its own; OP25B is still not in it.
        policy = with_profile(
            policy, name="business", new_per_minute=100, burst=50, pools=("static",)
        )
    gateway.apply(policy)
    assert tcp(topology, STATIC4, MX4, 25) is Outcome.CONNECTED
    assert tcp(topology, STATIC6, MX6, 25) is Outcome.CONNECTED
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET  # the table is live


def test_exempted_account_connects_while_neighbour_is_reset(
    topology: Topology, gateway: Gateway
) -> None:
    policy = base_policy()
    policy["exemptions"] = [{"key": DYN4_C, "account": "cust-1003", "ticket": "TKT-88"}]
    gateway.apply(policy)
    assert tcp(topology, DYN4_C, MX4, 25) is Outcome.CONNECTED
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
    assert tcp(topology, DYN4_B, MX4, 25) is Outcome.RESET


def test_exempted_ipv6_delegation_covers_its_whole_56(topology: Topology, gateway: Gateway) -> None:
    policy = base_policy()
    policy["exemptions"] = [{"key": "2001:db8:1000:100::/56", "account": "cust-2001"}]
    gateway.apply(policy)
    assert tcp(topology, DYN6_A1, MX6, 25) is Outcome.CONNECTED
    assert tcp(topology, DYN6_A2, MX6, 25) is Outcome.CONNECTED
    assert tcp(topology, DYN6_B, MX6, 25) is Outcome.RESET


def test_ipv6_dynamic_to_outside_25_is_reset_relay_connects(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    gateway.apply(base_policy())
    before = gateway.counter("op25b_dyn6")
    for src in (DYN6_A1, DYN6_A2, DYN6_B):
        assert tcp(topology, src, MX6, 25) is Outcome.RESET, src
    assert gateway.counter("op25b_dyn6") == before + 3
    assert tcp(topology, DYN6_A1, RELAY6, 25) is Outcome.CONNECTED
    for port in (587, 465):
        assert tcp(topology, DYN6_A1, MX6, port) is Outcome.CONNECTED, port


def test_op25b_shadow_counts_but_lets_through(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    policy = base_policy()
    shadowed = copy.deepcopy(policy)
    shadowed["pools"][0]["op25b_shadow"] = True  # dyn4 only
    gateway.apply(shadowed)
    before = gateway.counter("op25b_dyn4")
    accepted = servers.mx.accepted(DYN4_A, port=25)
    for _ in range(3):
        assert tcp(topology, DYN4_A, MX4, 25) is Outcome.CONNECTED
    assert accepted_reaches(servers.mx, DYN4_A, 25, accepted + 3)
    # Counted, as an operator sees it: one SYN per connection (the rest of
    # each flow is established and accepted before OP25B).
    assert gateway.shown_counter("op25b_dyn4") == before + 3
    # The relay is not an offence, even in shadow mode.
    assert tcp(topology, DYN4_A, RELAY4, 25) is Outcome.CONNECTED
    assert gateway.counter("op25b_dyn4") == before + 3
    # Shadow is per pool: dyn6 still enforces.
    assert tcp(topology, DYN6_A1, MX6, 25) is Outcome.RESET


def test_block_action_drop_makes_op25b_silent(topology: Topology, gateway: Gateway) -> None:
    policy = base_policy()
    policy["settings"]["block_action"] = "drop"
    gateway.apply(policy)
    assert tcp(topology, DYN4_A, MX4, 25, expect_drop=True) is Outcome.TIMEOUT
    assert tcp(topology, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert tcp(topology, DYN4_A, RELAY4, 25) is Outcome.CONNECTED


def test_exemption_added_and_lifted_as_a_delta(topology: Topology, gateway: Gateway) -> None:
    policy = base_policy()
    gateway.apply(policy)
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
    exempted = dict(policy, revision=2, exemptions=[{"key": DYN4_A, "ticket": "TKT-1"}])
    run = gateway.apply(exempted)
    assert "delta sync" in run.out, str(run)
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.CONNECTED
    assert tcp(topology, DYN4_B, MX4, 25) is Outcome.RESET
    run = gateway.apply(dict(policy, revision=3))
    assert "delta sync" in run.out, str(run)
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET


def test_exemption_with_expiry_lapses_in_the_kernel(topology: Topology, gateway: Gateway) -> None:
    lifetime = 3.0
    expires = datetime.now(UTC) + timedelta(seconds=lifetime)
    policy = base_policy()
    policy["exemptions"] = [{"key": DYN4_C, "ticket": "TKT-9", "expires": expires.isoformat()}]
    gateway.apply(policy)
    assert tcp(topology, DYN4_C, MX4, 25) is Outcome.CONNECTED
    # No edgectl run from here on: the element's kernel timeout ends the exemption.
    assert wait_until(lambda: tcp(topology, DYN4_C, MX4, 25) is Outcome.RESET, lifetime + 10)
    assert datetime.now(UTC) >= expires - timedelta(seconds=0.2)
    assert gateway.plan(policy).code == 0
