"""Applying policies over time: idempotence, foreign tables, drift repair, refusals.

Each test drives the real ``edgectl apply``/``plan`` CLI against the lab
gateway and checks both what the kernel holds (``nft list``, the ruleset
generation) and what traffic does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from gateway_fixtures import (
    DYN4_A,
    DYN4_B,
    DYN4_C,
    DYN6_A1,
    DYN6_A_KEY,
    MX4,
    MX6,
    OTHER_TABLE,
    OTHER_TOOL_SCRIPT,
    STATIC4,
    Gateway,
    base_policy,
    tcp,
    with_profile,
    with_quarantines,
)

from edgectl.lab.probe import Outcome
from edgectl.lab.topology import Topology


def enforcing_policy() -> dict[str, Any]:
    """Something of every kind, with no expiry (so listings do not count down)."""
    policy = with_profile(base_policy(), new_per_minute=100, burst=50, concurrent=20)
    policy["exemptions"] = [{"key": DYN4_C, "account": "cust-1003", "ticket": "TKT-88"}]
    return with_quarantines(
        policy,
        {"key": DYN4_B, "mode": "smtp", "account": "cust-1002"},
        {"key": DYN6_A_KEY, "mode": "smtp", "account": "cust-2001"},
        {"key": "100.64.9.0/24", "mode": "walled-garden"},
    )


def assert_enforcing(topology: Topology) -> None:
    """The traffic ``enforcing_policy`` stands for."""
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET  # OP25B
    assert tcp(topology, DYN4_A, MX4, 587) is Outcome.CONNECTED
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.RESET  # smtp quarantine
    assert tcp(topology, DYN6_A1, MX6, 587) is Outcome.RESET  # smtp quarantine, v6 /56
    assert tcp(topology, DYN4_C, MX4, 25) is Outcome.CONNECTED  # exemption


def test_applying_twice_changes_nothing(topology: Topology, gateway: Gateway) -> None:
    policy = gateway.policy_file(enforcing_policy())
    first = gateway.apply(policy)
    assert "full sync" in first.out, str(first)
    ruleset, generation = gateway.ruleset(), gateway.generation()
    shown = gateway.show()

    second = gateway.apply(policy)
    assert "nothing to do" in second.out, str(second)
    assert "sync" not in second.out.replace("in sync", ""), str(second)
    assert gateway.ruleset() == ruleset
    assert gateway.generation() == generation
    assert gateway.show()["applied_generation"] == shown["applied_generation"] == generation
    plan = gateway.plan(policy)
    assert plan.code == 0, str(plan)
    assert "action: none" in plan.out, str(plan)
    assert_enforcing(topology)


def test_other_tools_table_survives_every_apply(topology: Topology, gateway: Gateway) -> None:
    gateway.nft_script(OTHER_TOOL_SCRIPT)
    original = gateway.table(OTHER_TABLE)
    assert "192.0.2.7" in original and "counter name" in original

    def unchanged(step: str) -> None:
        assert gateway.table(OTHER_TABLE) == original, f"{OTHER_TABLE} changed by: {step}"

    policy = enforcing_policy()
    steps: list[tuple[str, Callable[[], object]]] = [
        ("first apply (full sync)", lambda: gateway.apply(policy)),
        ("apply in sync (no-op)", lambda: gateway.apply(policy)),
        (
            "apply a quarantine (delta)",
            lambda: gateway.apply(with_quarantines(policy, {"key": DYN4_A, "mode": "block"})),
        ),
        ("apply --full", lambda: gateway.apply(policy, "--full")),
        (
            "apply a structural change (full sync)",
            lambda: gateway.apply(with_profile(policy, name="other", new_per_minute=5, burst=5)),
        ),
        ("apply after drift (repair)", lambda: _drift_then_repair(gateway, policy)),
        (
            "a refused policy",
            lambda: gateway.apply(
                with_quarantines(policy, {"key": "0.0.0.0/0", "mode": "block"}), check=False
            ),
        ),
    ]
    for step, action in steps:
        action()
        unchanged(step)
    assert_enforcing(topology)
    unchanged("traffic")


def _drift_then_repair(gateway: Gateway, policy: dict[str, Any]) -> None:
    gateway.nft("delete", "element", "inet", "edgectl", "q_smtp_4", f"{{ {DYN4_B} }}")
    run = gateway.apply(policy)
    assert "repaired" in run.out, str(run)


def test_deleted_element_is_reported_and_repaired(topology: Topology, gateway: Gateway) -> None:
    policy = gateway.policy_file(enforcing_policy())
    gateway.apply(policy)
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.RESET

    gateway.nft("delete", "element", "inet", "edgectl", "q_smtp_4", f"{{ {DYN4_B} }}")
    # The deletion took effect: the quarantined subscriber gets through.
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.CONNECTED
    plan = gateway.plan(policy)
    assert plan.code == 2, str(plan)
    assert f"set q_smtp_4: missing {DYN4_B}" in plan.out, str(plan)

    run = gateway.apply(policy)
    assert f"repaired: set q_smtp_4: missing {DYN4_B}" in run.out, str(run)
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.RESET
    assert_enforcing(topology)
    plan = gateway.plan(policy)
    assert plan.code == 0, str(plan)


def test_deleted_exemption_is_reported_and_repaired(topology: Topology, gateway: Gateway) -> None:
    policy = gateway.policy_file(enforcing_policy())
    gateway.apply(policy)
    gateway.nft("delete", "element", "inet", "edgectl", "exempt_4", f"{{ {DYN4_C} }}")
    assert tcp(topology, DYN4_C, MX4, 25) is Outcome.RESET
    plan = gateway.plan(policy)
    assert plan.code == 2, str(plan)
    assert f"set exempt_4: missing {DYN4_C}" in plan.out, str(plan)
    gateway.apply(policy)
    assert tcp(topology, DYN4_C, MX4, 25) is Outcome.CONNECTED


def test_deleted_pool_element_is_reported_and_repaired(
    topology: Topology, gateway: Gateway
) -> None:
    policy = gateway.policy_file(enforcing_policy())
    gateway.apply(policy)
    gateway.nft("delete", "element", "inet", "edgectl", "pools_4", "{ 100.64.0.0/16 }")
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.CONNECTED  # OP25B is gone
    plan = gateway.plan(policy)
    assert plan.code == 2, str(plan)
    assert "map pools_4: missing 100.64.0.0/16 : goto pool_dyn4_4" in plan.out, str(plan)
    run = gateway.apply(policy)
    assert "repaired: map pools_4: missing 100.64.0.0/16" in run.out, str(run)
    assert_enforcing(topology)
    assert gateway.plan(policy).code == 0


def test_rule_inserted_by_hand_is_reported_and_removed(
    topology: Topology, gateway: Gateway
) -> None:
    policy = gateway.policy_file(enforcing_policy())
    gateway.apply(policy)
    # Somebody "fixes" a complaint by letting everything through, in our table.
    gateway.nft("insert", "rule", "inet", "edgectl", "forward", "accept")
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.CONNECTED
    plan = gateway.plan(policy)
    assert plan.code == 2, str(plan)
    assert "chain forward: rules differ" in plan.out, str(plan)
    run = gateway.apply(policy)
    assert "repaired: chain forward: rules differ" in run.out, str(run)
    assert_enforcing(topology)
    assert "\t\taccept\n" not in gateway.table("edgectl")


def test_counters_survive_a_full_sync(topology: Topology, gateway: Gateway) -> None:
    policy = gateway.policy_file(enforcing_policy())
    gateway.apply(policy)
    for _ in range(3):
        assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
    assert gateway.counter("op25b_dyn4") == 3
    run = gateway.apply(policy, "--full")
    assert "full sync" in run.out, str(run)
    assert gateway.counter("op25b_dyn4") == 3
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
    assert gateway.shown_counter("op25b_dyn4") == 4


@pytest.mark.parametrize(
    ("vandalism", "reported"),
    [
        (("flush", "table", "inet", "edgectl"), "chain forward: rules differ"),
        (("delete", "table", "inet", "edgectl"), "table inet edgectl: missing"),
        (("flush", "ruleset"), "table inet edgectl: missing"),
    ],
    ids=["flush-table", "delete-table", "flush-ruleset"],
)
def test_flushed_table_is_reported_and_repaired(
    topology: Topology, gateway: Gateway, vandalism: tuple[str, ...], reported: str
) -> None:
    policy = gateway.policy_file(enforcing_policy())
    gateway.apply(policy)
    assert_enforcing(topology)

    gateway.nft(*vandalism)
    # Nothing is enforced any more.
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.CONNECTED
    assert tcp(topology, DYN4_B, MX4, 587) is Outcome.CONNECTED
    plan = gateway.plan(policy)
    assert plan.code == 2, str(plan)
    assert reported in plan.out, str(plan)

    run = gateway.apply(policy)
    assert f"repaired: {reported}" in run.out, str(run)
    assert "full sync" in run.out, str(run)
    assert_enforcing(topology)
    plan = gateway.plan(policy)
    assert plan.code == 0, str(plan)


def _add_range_quarantine(policy: dict[str, Any]) -> dict[str, Any]:
    return with_quarantines(policy, {"key": "100.64.0.8/30", "mode": "smtp"})


def _add_profile(policy: dict[str, Any]) -> dict[str, Any]:
    changed = with_profile(policy, name="strict", new_per_minute=5, burst=5, pools=("static",))
    return dict(changed, revision=policy["revision"] + 1)


def _range_enforced(topology: Topology) -> None:
    assert tcp(topology, DYN4_A, MX4, 587) is Outcome.RESET  # inside the /30
    assert tcp(topology, DYN4_C, MX4, 587) is Outcome.CONNECTED  # outside it


def _profile_enforced(topology: Topology) -> None:
    # The static pool now has a chain of its own: still no OP25B in it.
    assert tcp(topology, STATIC4, MX4, 25) is Outcome.CONNECTED
    assert_enforcing(topology)


@pytest.mark.parametrize(
    ("change", "kind", "enforced"),
    [
        (_add_range_quarantine, "delta", _range_enforced),
        (_add_profile, "full", _profile_enforced),
    ],
    ids=["range-quarantine", "new-rate-limit-profile"],
)
def test_a_policy_change_is_a_change_not_drift(
    topology: Topology,
    gateway: Gateway,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    kind: str,
    enforced: Callable[[Topology], None],
) -> None:
    """Only the kernel departing from what was applied is drift (and counts as a repair)."""
    before = enforcing_policy()
    gateway.apply(before)
    after = gateway.policy_file(change(before))
    plan = gateway.plan(after)
    assert plan.code == 2, str(plan)
    assert "changes:" in plan.out, str(plan)
    assert "drift:" not in plan.out, str(plan)
    run = gateway.apply(after)
    assert f"{kind} sync" in run.out, str(run)
    assert "repaired" not in run.out, str(run)
    assert gateway.plan(after).code == 0
    enforced(topology)


def _refused(field: str, reason: str, change: Callable[[dict[str, Any]], None]) -> Any:
    return pytest.param(field, reason, change, id=field)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(policy: dict[str, Any]) -> None:
        target = policy
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _quarantine(key: str) -> Callable[[dict[str, Any]], None]:
    def change(policy: dict[str, Any]) -> None:
        policy["quarantines"].append({"key": key, "mode": "block"})

    return change


@pytest.mark.parametrize(
    ("field", "reason", "change"),
    [
        _refused("quarantines[0.0.0.0/0]", "every subscriber", _quarantine("0.0.0.0/0")),
        _refused("quarantines[::/0]", "every subscriber", _quarantine("::/0")),
        _refused("quarantines[198.51.100.25]", "must never be held", _quarantine("198.51.100.25")),
        _refused(
            "settings.op25b_ports[1]",
            "never block 587",
            _set(("settings", "op25b_ports"), [25, 587]),
        ),
        _refused(
            "settings.op25b_ports[0]", "never block 465", _set(("settings", "op25b_ports"), [465])
        ),
        _refused(
            "pools[0].prefixes[0]", "host bits", _set(("pools", 0, "prefixes"), ["100.64.0.1/16"])
        ),
        _refused(
            "quarantines[2].key",
            "host bits",
            lambda p: p["quarantines"][2].update(key="100.64.9.1/24"),
        ),
        _refused("pools[0].op25b_shadw", "unknown field", _set(("pools", 0, "op25b_shadw"), True)),
    ],
)
def test_refused_policy_leaves_the_kernel_untouched(
    topology: Topology,
    gateway: Gateway,
    field: str,
    reason: str,
    change: Callable[[dict[str, Any]], None],
) -> None:
    good = enforcing_policy()
    gateway.apply(good)
    ruleset, generation = gateway.ruleset(), gateway.generation()
    record = {p: p.read_bytes() for p in gateway.state_dir.rglob("*") if p.is_file()}

    bad = copy.deepcopy(good)
    bad["revision"] += 1
    change(bad)
    run = gateway.apply(bad, check=False)
    assert run.code == 2, str(run)
    assert field in run.err and reason in run.err, str(run)
    assert "Traceback" not in run.err, str(run)
    assert gateway.ruleset() == ruleset
    assert gateway.generation() == generation
    assert {p: p.read_bytes() for p in gateway.state_dir.rglob("*") if p.is_file()} == record
    assert_enforcing(topology)


def test_refused_toml_policy_names_the_field(topology: Topology, gateway: Gateway) -> None:
    gateway.apply(base_policy())
    ruleset, generation = gateway.ruleset(), gateway.generation()
    # A hand-written file with a host-bits typo in a pool prefix.
    toml = (
        'gateway = "lab-gw"\n'
        "revision = 2\n\n"
        "[[pools]]\n"
        'name = "dyn4"\n'
        'kind = "dynamic"\n'
        'prefixes = ["100.64.0.1/16"]\n'
    )
    run = gateway.apply(toml, check=False)
    assert run.code == 2, str(run)
    assert "pools[0].prefixes[0]" in run.err and "host bits" in run.err, str(run)
    # plan refuses it the same way, rather than planning against it.
    run = gateway.plan(toml)
    assert run.code != 0, str(run)
    assert "pools[0].prefixes[0]" in run.err and "action:" not in run.out, str(run)
    # A syntax error names the line.
    run = gateway.apply(toml.replace('"dynamic"', '"dynamic'), check=False)
    assert run.code == 2, str(run)
    assert "line 6" in run.err, str(run)
    assert gateway.ruleset() == ruleset
    assert gateway.generation() == generation
    assert tcp(topology, DYN4_A, MX4, 25) is Outcome.RESET
