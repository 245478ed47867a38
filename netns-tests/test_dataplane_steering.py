"""Walled-garden steering over real TCP through the lab gateway (issue 13).

A walled-garden subscriber's plain HTTP to any outside host is answered by
the portal (DNAT in ``table inet edgectl``); its HTTPS is refused; an
allowlisted update host is reached as itself; a neighbour that is not held
reaches the real server untouched.  Each server says who it is, so "the
portal answered" is read from the reply, not guessed from a port.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_fixtures import (
    DYN4_A,
    DYN4_B,
    DYN4_C,
    DYN6_A1,
    DYN6_A_KEY,
    DYN6_B,
    MAIL_PORTS,
    MX4,
    MX4_SECOND,
    MX6,
    PORTAL4,
    PORTAL6,
    SOURCE_HOST,
    Gateway,
    Servers,
    base_policy,
    listening,
    tcp,
    with_quarantines,
)

from edgectl.lab.probe import Outcome
from edgectl.lab.topology import Topology
from edgectl.lab.web import Reply, http_request, text_server

PORTAL_PORT = 8080


@pytest.fixture(scope="module", name="servers")
def servers_fixture(topology: Topology) -> Iterator[Servers]:
    """The standard listeners, minus the MX's port 80: a text server answers there."""
    hosts = topology.hosts
    with contextlib.ExitStack() as stack:
        servers = stack.enter_context(listening(topology, mx_ports=(*MAIL_PORTS, 443)))
        for address in (MX4, MX6):
            stack.enter_context(text_server(hosts["mx"].ns, address, 80, "real server"))
        stack.enter_context(text_server(hosts["mx"].ns, MX4_SECOND, 80, "update service"))
        for address in (PORTAL4, PORTAL6):
            stack.enter_context(text_server(hosts["portal"].ns, address, PORTAL_PORT, "portal"))
        yield servers


def steering_policy() -> dict[str, Any]:
    policy = base_policy()
    policy["settings"].update(
        steer_http_4=PORTAL4,
        steer_http_6=PORTAL6,
        steer_http_port=PORTAL_PORT,
        garden_allow=[{"prefix": f"{MX4_SECOND}/32", "ports": [80, 443]}],
    )
    return with_quarantines(
        policy,
        {"key": DYN4_A, "mode": "walled-garden", "account": "cust-1001"},
        {"key": DYN6_A_KEY, "mode": "walled-garden", "account": "cust-2001"},
    )


def get(topology: Topology, src: str, dst: str) -> Reply | Outcome:
    return http_request(topology.hosts[SOURCE_HOST[src]].ns, dst, 80, src=src, host="example.org")


def test_walled_garden_http_is_steered_to_the_portal(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    # Before any hold, everybody reaches the real server.
    gateway.apply(base_policy())
    assert _body(get(topology, DYN4_A, MX4)) == "real server"
    gateway.apply(steering_policy())
    for src, dst in ((DYN4_A, MX4), (DYN6_A1, MX6)):
        reply = get(topology, src, dst)
        assert isinstance(reply, Reply) and reply.body == "portal", (src, reply)
    # The neighbours (another address, another /56) are not touched.
    for src, dst in ((DYN4_B, MX4), (DYN6_B, MX6)):
        reply = get(topology, src, dst)
        assert isinstance(reply, Reply) and reply.body == "real server", (src, reply)


def test_plan_reads_the_steering_back_as_applied(gateway: Gateway, servers: Servers) -> None:
    """Read-back knows the nat chain and the allowlist: no phantom drift, and a
    deleted allowlist element is found (an agent would repair it)."""
    policy = steering_policy()
    gateway.apply(policy)
    plan = gateway.plan(policy)
    assert plan.code == 0 and "action: none" in plan.out, str(plan)
    gateway.nft(
        "delete", "element", "inet", "edgectl", "garden_allow_4", f"{{ {MX4_SECOND} . 80 }}"
    )
    plan = gateway.plan(policy)
    assert plan.code == 2 and "garden_allow_4" in plan.out, str(plan)


def test_walled_garden_https_is_refused_and_updates_are_reachable(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    gateway.apply(steering_policy())
    assert tcp(topology, DYN4_A, MX4, 443, expect_drop=True) is Outcome.TIMEOUT
    assert tcp(topology, DYN6_A1, MX6, 443, expect_drop=True) is Outcome.TIMEOUT
    # The allowlisted update host, as itself, on both listed ports.
    reply = get(topology, DYN4_A, MX4_SECOND)
    assert isinstance(reply, Reply) and reply.body == "update service"
    assert tcp(topology, DYN4_A, MX4_SECOND, 443) is Outcome.CONNECTED
    # Not listed: a port the update host did not ask for.
    assert tcp(topology, DYN4_A, MX4_SECOND, 25, expect_drop=True) is Outcome.TIMEOUT
    # The neighbour's HTTPS goes out untouched.
    assert tcp(topology, DYN4_B, MX4, 443) is Outcome.CONNECTED


def test_lifting_the_hold_ends_the_steering(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    gateway.apply(steering_policy())
    assert _body(get(topology, DYN4_A, MX4)) == "portal"
    lifted = steering_policy()
    lifted["revision"] += 1
    lifted["quarantines"] = []
    gateway.apply(lifted)
    assert _body(get(topology, DYN4_A, MX4)) == "real server"


def test_walled_garden_prefix_holds_are_steered_too(
    topology: Topology, gateway: Gateway, servers: Servers
) -> None:
    """A hold on a prefix wider than one subscriber (a /30 of the dynamic
    pool, a /55 over two /56 delegations' worth) steers everyone inside it
    and nobody outside; lifting it ends the steering."""
    policy = base_policy()
    policy["settings"].update(
        steer_http_4=PORTAL4, steer_http_6=PORTAL6, steer_http_port=PORTAL_PORT
    )
    held = with_quarantines(
        policy,
        {"key": "100.64.0.8/30", "mode": "walled-garden"},  # DYN4_A and DYN4_B, not DYN4_C
        {"key": "2001:db8:1000::/55", "mode": "walled-garden"},  # DYN6_A1's /56, not DYN6_B's
    )
    gateway.apply(held)
    for src, dst in ((DYN4_A, MX4), (DYN4_B, MX4), (DYN6_A1, MX6)):
        assert _body(get(topology, src, dst)) == "portal", src
    for src, dst in ((DYN4_C, MX4), (DYN6_B, MX6)):
        assert _body(get(topology, src, dst)) == "real server", src
    # HTTPS stays refused inside the garden.
    assert tcp(topology, DYN4_B, MX4, 443, expect_drop=True) is Outcome.TIMEOUT
    assert gateway.plan(held).code == 0
    lifted = dict(policy, revision=held["revision"] + 1, quarantines=[])
    gateway.apply(lifted)
    assert _body(get(topology, DYN4_A, MX4)) == "real server"


def _body(reply: Reply | Outcome) -> str | Outcome:
    return reply.body if isinstance(reply, Reply) else reply
