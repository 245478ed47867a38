"""Nested pools through the lab gateway: a static range carved out of a dynamic one.

The dynamic pools here are widened to cover the lab's static subscribers
(dynamic 100.64.0.0/10 around static 100.65.0.0/24; dynamic 2001:db8::/32
around static 2001:db8:2000::/40), as ISPs number business customers.  The
most specific pool decides, with real connections from both ranges: OP25B
for the outer dynamic range only, the inner static range's own limits.
"""

from __future__ import annotations

import copy
from typing import Any

from gateway_fixtures import (
    DYN4_A,
    DYN6_A1,
    MX4,
    MX6,
    STATIC4,
    STATIC6,
    Gateway,
    base_policy,
    tcp,
)

from edgectl.lab.probe import Outcome
from edgectl.lab.topology import Topology

OUTER = {"dyn4": ["100.64.0.0/10"], "dyn6": ["2001:db8::/32"]}


def nested_policy() -> dict[str, Any]:
    policy = copy.deepcopy(base_policy())
    for pool in policy["pools"]:
        pool["prefixes"] = OUTER.get(pool["name"], pool["prefixes"])
    return policy


def test_op25b_for_the_outer_dynamic_range_only(topology: Topology, gateway: Gateway) -> None:
    gateway.apply(nested_policy())
    # The pool map's intervals read back as rendered: no drift to repair.
    plan = gateway.plan(nested_policy())
    assert plan.code == 0, str(plan)
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
    assert tcp(topology, DYN6_A1, MX6, 25) is Outcome.RESET
    # Inside the dynamic pools, but in the static ones carved out of them.
    assert tcp(topology, STATIC4, MX4, 25) is Outcome.CONNECTED
    assert tcp(topology, STATIC6, MX6, 25) is Outcome.CONNECTED
    assert gateway.counter("op25b_dyn4") == 1
    assert gateway.counter("op25b_dyn6") == 1


def test_the_inner_pool_has_its_own_limits(topology: Topology, gateway: Gateway) -> None:
    policy = nested_policy()
    burst = 2
    policy["rate_limits"] = [{"name": "business", "new_per_minute": 1, "burst": burst}]
    for pool in policy["pools"]:
        if pool["name"] == "static":
            pool["rate_limit"] = "business"
    gateway.apply(policy)
    outcomes = [tcp(topology, STATIC4, MX4, 587) for _ in range(burst + 1)]
    assert outcomes == [Outcome.CONNECTED] * burst + [Outcome.RESET]
    # The outer dynamic range has no profile: no limit.
    assert [tcp(topology, DYN4_A, MX4, 587) for _ in range(burst + 2)] == [Outcome.CONNECTED] * (
        burst + 2
    )


def test_the_same_prefix_in_two_pools_is_refused(gateway: Gateway) -> None:
    policy = nested_policy()
    policy["pools"].append({"name": "again", "kind": "static", "prefixes": ["100.65.0.0/24"]})
    run = gateway.apply(policy, check=False)
    assert run.code == 2 and "pools[again]" in run.text and "also in pools[static]" in run.text
    assert not gateway.has_table("edgectl")
