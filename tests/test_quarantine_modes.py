"""Quarantine modes as data: the model's MODE_POLICY is complete and coherent.

Compile (severity, fallback), lint and the API's placement check (needs a
garden) read this one table; a mode the table misses would be a KeyError at
its first hold, and a fallback milder than its mode would release people.
"""

from __future__ import annotations

from edgectl.agent.keys import MODE_LAYOUT
from edgectl.model import MODE_POLICY, GatewaySettings, Prefix, QuarantineMode, enforced_mode


def test_every_mode_has_its_policy_and_its_place_on_the_packet_path() -> None:
    assert set(MODE_POLICY) == set(QuarantineMode)
    assert {layout.mode for layout in MODE_LAYOUT} == set(QuarantineMode)


def test_severities_rank_every_mode_apart() -> None:
    severities = [policy.severity for policy in MODE_POLICY.values()]
    assert len(set(severities)) == len(severities)
    assert min(severities) > 0  # an exemption ranks 0


def test_a_fallback_is_never_milder_and_needs_nothing_itself() -> None:
    for mode, policy in MODE_POLICY.items():
        if not policy.needs_garden:
            continue
        assert policy.fallback is not None, mode
        fallback = MODE_POLICY[policy.fallback]
        assert fallback.severity > policy.severity, mode
        assert not fallback.needs_garden, mode


def test_a_gateway_without_a_garden_enforces_the_fallback() -> None:
    assert enforced_mode(QuarantineMode.WALLED_GARDEN, False) is QuarantineMode.BLOCK
    assert enforced_mode(QuarantineMode.WALLED_GARDEN, True) is QuarantineMode.WALLED_GARDEN
    for mode in (QuarantineMode.SMTP, QuarantineMode.BLOCK):
        assert enforced_mode(mode, False) is mode


def test_garden_ready_needs_both_resolvers_and_portal() -> None:
    resolver = (Prefix.parse("192.0.2.53"),)
    portal = (Prefix.parse("192.0.2.80"),)
    assert GatewaySettings(resolvers=resolver, portal=portal).garden_ready
    assert not GatewaySettings(resolvers=resolver).garden_ready
    assert not GatewaySettings(portal=portal).garden_ready
