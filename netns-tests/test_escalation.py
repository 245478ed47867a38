"""Escalation end to end: real connects over a rate limit, the agents' offenders
reports, the controller's engine, and the hold enforced by both gateways' kernels.

A subscriber's bot hammers the mail port past its profile's burst; the
gateway logs the refusals (nflog), the agent reports them as ``ratelimit``
offenders, and the controller's escalation engine turns them into strike 1
of a policy: a walled-garden hold, which both gateways put in their
``q_walled_garden_4`` set.  Released, a second burst is strike 2: smtp.
A propose-mode policy files a proposal and holds nobody until an analyst
approves; an exempt account hammering is not held.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agent_fixtures import (
    CONVERGE_TIMEOUT,
    DYN4_A,
    DYN4_B,
    DYN4_C,
    System,
    mail,
    missing_keys,
)
from database_fixtures import BOTH_BACKENDS
from test_agent_offenders import BURST, REPORTED, rate_limited

from edgectl.lab.probe import Outcome
from edgectl.testing.wait import wait_until

# The controller's database matters here: run on SQLite and on PostgreSQL.
pytestmark = BOTH_BACKENDS

THRESHOLD = 3  # refused connects that make a strike
# Report (2 s) + the engine's pass (0.5 s) + a revision to both agents, with room.
ACTED = REPORTED + 10.0


def _ladder(mode: str) -> dict[str, Any]:
    return {
        "mode": mode,
        "strikes": [{"source": "offender", "kind": "ratelimit", "threshold": THRESHOLD}],
        "steps": [
            {"strike": 1, "mode": "walled-garden", "duration": 3600},
            {"strike": 2, "mode": "smtp", "duration": 3600},
        ],
        "window": 86_400,
    }


@pytest.fixture(name="escalating")
def escalating_fixture(clean: System) -> Iterator[System]:
    """Rate-limited pools, both gateways logging to nflog, and no policy left after."""
    rate_limited(clean)
    for gateway in ("gw-a", "gw-b"):
        clean.set_settings(gateway, log_group=7)
    yield clean
    for policy in clean.api("GET", "/v1/policies"):
        clean.api("DELETE", f"/v1/policies/{policy['name']}")


def _hammer(system: System, source: str, refused: int) -> None:
    """``refused`` connects past whatever the bucket still allows, through gw-a."""
    site = system.sites["gw-a"]
    outcomes = [mail(site, source) for _ in range(BURST + refused)]
    assert outcomes.count(Outcome.RESET) >= refused, outcomes


def _holds(system: System, account: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = system.api("GET", f"/v1/quarantines?account={account}")
    return found


def _enforced_everywhere(system: System, set_name: str, key: str) -> bool:
    return all(missing_keys(site, set_name, [key]) == 0 for site in system.sites.values())


def test_rate_limit_offenders_walled_garden_then_smtp_on_both_gateways(
    escalating: System,
) -> None:
    system = escalating
    system.api("PUT", "/v1/policies/bulk-mail", _ladder("enforce"))
    system.session("alice", ipv4=DYN4_A)
    assert system.converged()
    _hammer(system, DYN4_A, THRESHOLD + 1)

    assert wait_until(lambda: bool(_holds(system, "alice")), ACTED, 0.2), (
        system.api("GET", "/v1/offenders"),
        system.controller.logs()[-3000:],
    )
    [hold] = _holds(system, "alice")
    assert (hold["mode"], hold["actor"]) == ("walled-garden", "policy:bulk-mail")
    assert wait_until(
        lambda: _enforced_everywhere(system, "q_walled_garden_4", DYN4_A), CONVERGE_TIMEOUT, 0.1
    )
    # Real traffic: the mail port is now dropped by the garden, on either gateway.
    assert mail(system.sites["gw-b"], DYN4_A) is Outcome.TIMEOUT
    [record] = system.api("GET", "/v1/audit?actor=policy:bulk-mail&action=quarantine.create")
    items = record["after"]["evidence"]["items"]
    assert {item["gateway"] for item in items if "gateway" in item} == {"gw-a"}

    # Released, the bot starts again: strike 2, smtp.
    system.lift("quarantines", hold["id"])
    assert system.converged()
    _hammer(system, DYN4_A, THRESHOLD + 1)

    def smtp() -> bool:
        return [h["mode"] for h in _holds(system, "alice")] == ["smtp"]

    assert wait_until(smtp, ACTED, 0.2), (
        _holds(system, "alice"),
        system.api("GET", "/v1/offenders"),
    )
    assert wait_until(
        lambda: _enforced_everywhere(system, "q_smtp_4", DYN4_A), CONVERGE_TIMEOUT, 0.1
    )
    assert mail(system.sites["gw-a"], DYN4_A) is Outcome.RESET


def test_propose_mode_files_a_proposal_and_holds_nobody_until_approved(
    escalating: System,
) -> None:
    system = escalating
    system.api("PUT", "/v1/policies/bulk-mail-trial", _ladder("propose"))
    system.session("bob", ipv4=DYN4_B)
    assert system.converged()
    _hammer(system, DYN4_B, THRESHOLD + 1)

    def proposed() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = system.api("GET", "/v1/proposals?policy=bulk-mail-trial")
        return [p for p in found if p["account"] == "bob"]

    assert wait_until(lambda: bool(proposed()), ACTED, 0.2), system.api("GET", "/v1/offenders")
    assert _holds(system, "bob") == []
    assert missing_keys(system.sites["gw-a"], "q_walled_garden_4", [DYN4_B]) == 1
    [proposal] = proposed()
    system.api("POST", f"/v1/proposals/{proposal['id']}/approve", {"reason": "confirmed"})
    [hold] = _holds(system, "bob")
    assert hold["mode"] == "walled-garden" and hold["actor"] == "token:agent-tests"
    assert wait_until(
        lambda: _enforced_everywhere(system, "q_walled_garden_4", DYN4_B), CONVERGE_TIMEOUT, 0.1
    )


def test_an_exempt_account_hammering_is_not_held(escalating: System) -> None:
    system = escalating
    system.api("PUT", "/v1/policies/bulk-mail", _ladder("enforce"))
    system.session("carol", ipv4=DYN4_C)
    system.api(
        "POST", "/v1/exemptions", {"account": "carol", "ticket": "T-9", "reason": "own relay"}
    )
    assert system.converged()
    _hammer(system, DYN4_C, THRESHOLD + 1)

    def struck() -> bool:
        records = system.api("GET", "/v1/audit?actor=policy:bulk-mail&action=policy.strike")
        return any(r["object_id"] == "carol" for r in records)

    assert wait_until(struck, ACTED, 0.2), system.api("GET", "/v1/offenders")
    records = system.api("GET", "/v1/audit?actor=policy:bulk-mail&action=policy.strike")
    [record] = [r for r in records if r["object_id"] == "carol"]
    assert record["after"]["outcome"] == "exempt"
    assert _holds(system, "carol") == []
    assert missing_keys(system.sites["gw-a"], "q_walled_garden_4", [DYN4_C]) == 1
