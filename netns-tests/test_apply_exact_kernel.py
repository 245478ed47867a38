"""``edgectl apply -f`` of a JSON policy of exact keys onto no table: written from
key columns (no model built), it leaves the table, the traffic and the state
file the ordinary path leaves; a refused one leaves no table.

The unit-tier equality (any mix of keys) is tests/test_apply_exact.py.
"""

from __future__ import annotations

import json
from typing import Any

from gateway_fixtures import (
    DYN4_A,
    DYN4_B,
    DYN4_C,
    DYN6_A1,
    DYN6_A_KEY,
    MX4,
    MX6,
    Gateway,
    base_policy,
    tcp,
    with_profile,
    with_quarantines,
)

from edgectl.agent.apply import Dataplane
from edgectl.agent.persist import StateStore
from edgectl.agent.table import SPEC
from edgectl.lab.probe import Outcome
from edgectl.lab.topology import Topology
from edgectl.model.serial import exact_columns, state_from_data


def exact_policy() -> dict[str, Any]:
    """Every key exact (IPv4 addresses, an IPv6 /56 of the delegated length), no expiry
    (so listings do not count down)."""
    policy = with_profile(base_policy(), new_per_minute=100, burst=50, concurrent=20)
    policy["exemptions"] = [{"key": DYN4_C, "account": "cust-1003", "ticket": "TKT-88"}]
    return with_quarantines(
        policy,
        {"key": DYN4_B, "mode": "smtp", "account": "cust-1002"},
        {"key": DYN6_A_KEY, "mode": "smtp", "account": "cust-2001"},
        {"key": "100.64.9.7", "mode": "block"},
    )


def test_exact_keys_onto_no_table_make_the_ordinary_table(
    topology: Topology, gateway: Gateway
) -> None:
    policy = exact_policy()
    data = json.loads(json.dumps(policy))
    assert exact_columns(data) is not None  # the column path is the one taken
    state = state_from_data(data)
    path = gateway.policy_file(policy)
    run = gateway.apply(path)
    assert "applied revision" in run.out
    from_columns = gateway.ruleset(stateless=True)
    saved = StateStore(gateway.state_dir / f"netns-{gateway.ns}").load()
    assert saved is not None and saved.state == state
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET  # OP25B
    assert tcp(topology, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.RESET  # smtp quarantine
    assert tcp(topology, DYN6_A1, MX6, 587) is Outcome.RESET  # smtp quarantine, v6 /56
    assert tcp(topology, DYN4_C, MX4, 25) is Outcome.CONNECTED  # exemption
    # The ordinary path (the model, full_sync) onto no table: the same ruleset.
    gateway.nft("delete", "table", *SPEC.split())
    with Dataplane(gateway.ns) as dataplane:
        dataplane.full_sync(state)
    assert gateway.ruleset(stateless=True) == from_columns
    # The table gone with a state file there: a repair, from the columns again;
    # then, with the table there, the ordinary plan: nothing to do.
    gateway.nft("delete", "table", *SPEC.split())
    assert "repaired: table" in gateway.apply(path).out
    assert gateway.ruleset(stateless=True) == from_columns
    assert "in sync" in gateway.apply(path).out


def test_a_refused_exact_policy_names_the_entry_and_leaves_no_table(gateway: Gateway) -> None:
    policy = with_quarantines(base_policy(), {"key": "198.51.100.10", "mode": "smtp"})
    run = gateway.apply(policy, check=False)
    assert run.code == 2, str(run)
    assert "quarantines[198.51.100.10]" in run.text and "nothing applied" in run.text
    assert gateway.nft("list", "table", *SPEC.split(), check=False).returncode != 0
