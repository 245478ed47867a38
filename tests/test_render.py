"""Render: golden scripts, and the delta's shape."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from edgectl.agent.keys import EXEMPT, KeyLayout, needs_full_sync
from edgectl.agent.render import render_delta, render_full
from edgectl.model import DesiredState, Exemption, Prefix, Quarantine, QuarantineMode
from edgectl.model.delta import diff
from edgectl.model.policy import BlockAction, GatewaySettings, Hook, Pool, PoolKind
from tests.conftest import NOW

GOLDEN = Path(__file__).parent / "golden"


def _golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; UPDATE_GOLDEN=1 rewrites it (review the diff)."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_full_sync_golden(policy_state: DesiredState) -> None:
    _golden("full.nft", str(render_full(policy_state, NOW).transaction))


def test_full_sync_golden_drop_output_and_nflog(policy_state: DesiredState) -> None:
    settings = replace(
        policy_state.settings,
        hooks=(Hook.FORWARD, Hook.OUTPUT),
        block_action=BlockAction.DROP,
        log_group=7,
    )
    state = replace(policy_state, settings=settings, quarantines={}, exemptions={})
    _golden("full-drop-output-nflog.nft", str(render_full(state, NOW).transaction))


def test_full_sync_golden_untracked_non_mail(policy_state: DesiredState) -> None:
    settings = replace(policy_state.settings, track_non_mail=False)
    state = replace(policy_state, settings=settings, quarantines={}, exemptions={})
    script = str(render_full(state, NOW).transaction)
    _golden("full-untracked.nft", script)
    forward = script.split("chain forward {")[1].split("\n\t}")[0]
    # Untracked packets are never established: "block" is looked up on every
    # packet, the other modes on opening packets, and only new mail
    # connections reach the smtp set and the limits.
    assert "ct state established" not in forward
    assert forward.index("@q_block_4") < forward.index("tcp flags & (syn | ack) != syn accept")
    assert forward.index("tcp flags & (syn | ack) != syn accept") < forward.index(
        "@q_walled_garden_4"
    )
    assert forward.index("@q_walled_garden_4") < forward.index("ct state new jump mail")
    assert "@q_smtp_4" not in forward
    mail = script.split("chain mail {")[1].split("\n\t}")[0]
    assert mail.index("@q_smtp_4 goto quarantine_smtp") < mail.index("vmap @pools_4")


def test_untracked_without_ct_count_caps_uses_no_conntrack(policy_state: DesiredState) -> None:
    settings = replace(policy_state.settings, track_non_mail=False)
    profiles = tuple(
        replace(p, concurrent=None, per_destination=None) for p in policy_state.rate_limits
    )
    state = replace(policy_state, settings=settings, rate_limits=profiles)
    script = str(render_full(state, NOW).transaction)
    _golden("full-untracked-no-conntrack.nft", script)
    # Any ct expression (or notrack) would make the kernel register the
    # conntrack and defrag hooks for every packet of the namespace.
    assert re.search(r"\bct |notrack|priority raw", script) is None
    forward = script.split("chain forward {")[1].split("\n\t}")[0]
    # Only an opening SYN goes on past the block lookup and the flags rule.
    assert forward.index("@q_block_4") < forward.index("tcp flags & (syn | ack) != syn accept")
    assert forward.index("tcp flags & (syn | ack) != syn accept") < forward.index(
        "@q_walled_garden_4"
    )
    assert forward.index("@q_walled_garden_4") < forward.index(
        "tcp dport { 25, 465, 587 } jump mail"
    )


def test_keyed_hash_sets_are_collected_once_a_minute(policy_state: DesiredState) -> None:
    script = str(render_full(policy_state, NOW).transaction)
    block = script.split("set q_smtp_4 {")[1].split("}")[0]
    assert "flags timeout" in block and "gc-interval 60s" in block
    # Meters keep the kernel default: they are small and churn.
    meter = script.split("set rate_home_v4_4 {")[1].split("}")[0]
    assert "gc-interval" not in meter


def test_delta_golden(policy_state: DesiredState) -> None:
    quarantines = dict(policy_state.quarantines)
    moved = Prefix.parse("100.64.0.11")
    quarantines[moved] = Quarantine(moved, QuarantineMode.BLOCK, "cust-1002")
    added = Prefix.parse("100.64.0.40")
    quarantines[added] = Quarantine(added, QuarantineMode.SMTP, None, NOW + timedelta(hours=1))
    del quarantines[Prefix.parse("2001:db8:1000:200::/56")]
    new = replace(policy_state, revision=8, quarantines=quarantines)
    _golden("delta.nft", str(render_delta(policy_state, diff(policy_state, new), NOW)))


def test_counters_are_carried_over(policy_state: DesiredState) -> None:
    script = str(render_full(policy_state, NOW, {"op25b_home_v4": (12, 720)}).transaction)
    assert "counter op25b_home_v4 {\n\t\tpackets 12 bytes 720\n\t}" in script


def test_expired_entries_are_not_rendered(policy_state: DesiredState) -> None:
    later = NOW + timedelta(days=3)  # past the /56 block quarantine's expiry
    script = str(render_full(policy_state, later).transaction)
    assert "2001:db8:1000:200::" not in script
    assert "100.64.0.11" in script


def test_shadow_counts_without_refusing(policy_state: DesiredState) -> None:
    pools = tuple(replace(p, op25b_shadow=p.name == "home_v4") for p in policy_state.pools)
    script = str(render_full(replace(policy_state, pools=pools), NOW).transaction)
    chain = script.split("chain op25b_home_v4 {")[1].split("}")[0]
    assert "counter name op25b_home_v4 comment" in chain
    assert "reject" not in chain and "drop" not in chain
    other = script.split("chain op25b_home_v6 {")[1].split("}")[0]
    assert "reject with tcp reset" in other


def test_delta_cost_does_not_depend_on_set_size(policy_state: DesiredState) -> None:
    many = {
        Prefix(4, Prefix.parse("100.64.100.0").value + i, 32): Quarantine(
            Prefix(4, Prefix.parse("100.64.100.0").value + i, 32), QuarantineMode.BLOCK
        )
        for i in range(5000)
    }
    big = replace(policy_state, quarantines={**policy_state.quarantines, **many})
    key = Prefix.parse("100.64.0.99")
    grown = replace(
        big, revision=9, quarantines={**big.quarantines, key: Quarantine(key, QuarantineMode.SMTP)}
    )
    script = str(render_delta(big, diff(big, grown), NOW))
    # add, delete, add in its mode's set (the one element it has): nothing else
    assert script.count("100.64.0.99") == 3
    assert "100.64.100." not in script


def test_structural_change_is_not_a_delta(policy_state: DesiredState) -> None:
    changed = replace(
        policy_state, revision=8, settings=GatewaySettings(block_action=BlockAction.DROP)
    )
    with pytest.raises(ValueError, match="full sync"):
        render_delta(policy_state, diff(policy_state, changed), NOW)


def test_adjacent_prefixes_of_one_pool_are_one_interval(policy_state: DesiredState) -> None:
    halves = (Prefix.parse("100.66.0.0/17"), Prefix.parse("100.66.128.0/17"))
    pools = (*policy_state.pools, replace(policy_state.pools[0], name="more", prefixes=halves))
    script = str(render_full(replace(policy_state, pools=pools), NOW).transaction)
    assert "100.66.0.0/16 : goto pool_more_4" in script
    assert "100.66.128.0/17" not in script


def test_the_prefix_quarantine_rule_exists_only_with_prefix_quarantines(
    policy_state: DesiredState,
) -> None:
    ranges_key = Prefix.parse("100.64.9.0/24")
    without = replace(
        policy_state,
        quarantines={k: q for k, q in policy_state.quarantines.items() if k != ranges_key},
    )
    assert "@q_ranges_4" not in str(render_full(without, NOW).transaction).split("chain forward")[1]
    assert (
        "@q_ranges_4" in str(render_full(policy_state, NOW).transaction).split("chain forward")[1]
    )
    # The first prefix quarantine adds a rule: a full sync.  An exact key is a delta.
    assert needs_full_sync(without, diff(without, replace(policy_state, revision=9)))
    key = Prefix.parse("100.64.0.99")
    exact = replace(
        without,
        revision=9,
        quarantines={**without.quarantines, key: Quarantine(key, QuarantineMode.BLOCK)},
    )
    assert not needs_full_sync(without, diff(without, exact))


def test_every_key_is_one_element_in_the_set_its_layout_names(
    policy_state: DesiredState,
) -> None:
    """One element per key (no union sets): the full render writes each key
    once, where ``KeyLayout.place`` (deltas, plan, read-back) looks for it."""
    quarantines = dict(policy_state.quarantines)
    exemptions = dict(policy_state.exemptions)
    extra = {
        "100.64.0.99": QuarantineMode.BLOCK,  # IPv4 host
        "100.64.12.0/24": QuarantineMode.SMTP,  # IPv4 range
        "2001:db8:1000:4400::/56": QuarantineMode.WALLED_GARDEN,  # a delegation
        "2001:db8:1000:8000::/52": QuarantineMode.BLOCK,  # wider than one
    }
    for text, mode in extra.items():
        key = Prefix.parse(text)
        quarantines[key] = Quarantine(key, mode, None, NOW + timedelta(days=1))
    for text in ("100.64.0.98", "100.64.13.0/24", "2001:db8:1000:4500::/56"):
        key = Prefix.parse(text)
        exemptions[key] = Exemption(key, None)
    state = replace(policy_state, quarantines=quarantines, exemptions=exemptions)
    rendered = render_full(state, NOW)
    keys = KeyLayout(state.delegated_lengths())
    held = [(k, q.mode) for k, q in quarantines.items()] + [(k, EXEMPT) for k in exemptions]
    placed = [(key, *keys.place(key, kind, None)) for key, kind in held]
    assert {exact for *_, exact in placed} == {True, False}
    written = {
        name: [re.sub(r" timeout \d+s", "", e) for e in elements]
        for name, elements in rendered.set_elements.items()
    }
    for key, name, element, _ in placed:
        assert element in written[name], (key, name, written[name])
        # ...and in no other set: every key is stored once.
        address = element.split(" ")[0]
        holders = [n for n, els in written.items() if any(e.split(" ")[0] == address for e in els)]
        assert holders == [name], (key, holders)


def test_a_table_restored_in_two_steps_is_the_same_table(policy_state: DesiredState) -> None:
    """Onto no table: the structure first (keys=False), then render_keys; together
    they hold what one full render does."""
    from edgectl.agent.render import render_keys

    whole = render_full(policy_state, NOW)
    structure = render_full(policy_state, NOW, keys=False)
    assert structure.chain_tags == whole.chain_tags
    keys = render_keys(policy_state, NOW)
    assert keys.commands and all(c.startswith("add element") for c in keys.commands)
    layout = KeyLayout(policy_state.delegated_lengths())
    exact = {name for sets in layout.exact_sets().values() for _, _, name in sets}
    for name, elements in whole.set_elements.items():
        if name not in exact or not elements:
            # Pools, relays and prefix keys (which shape the rules) come
            # with the structure.
            assert structure.set_elements[name] == elements, name
            continue
        assert structure.set_elements[name] == []
        command = next(c for c in keys.commands if f" {name} {{" in c)
        assert all(element in command for element in elements), name


def _steering(state: DesiredState) -> DesiredState:
    from edgectl.model import GardenDestination

    settings = replace(
        state.settings,
        portal=(*state.settings.portal, Prefix.parse("2001:db8:80::80")),
        steer_http_4=state.settings.portal[0],
        steer_http_6=Prefix.parse("2001:db8:80::80"),
        steer_http_port=8080,
        garden_allow=(
            GardenDestination(Prefix.parse("203.0.113.0/28"), (80, 443)),
            # Overlaps the first on port 80: merged, as nft refuses overlaps.
            GardenDestination(Prefix.parse("203.0.113.0/29"), (80,)),
            GardenDestination(Prefix.parse("2001:db8:aa::/48"), (443,)),
        ),
    )
    return replace(state, settings=settings)


def test_full_sync_golden_steering(policy_state: DesiredState) -> None:
    script = str(render_full(_steering(policy_state), NOW).transaction)
    _golden("full-steering.nft", script)
    steer = script.split("chain steer_http {")[1].split("\n\t}")[0]
    assert "type nat hook prerouting priority dstnat; policy accept;" in steer
    # The portal and the allowlist are reached as themselves: their returns
    # come before the DNAT of each family.
    assert steer.index("ip daddr @portal_4 return") < steer.index("dnat ip to")
    assert steer.index("@garden_allow_4 return") < steer.index("dnat ip to")
    assert "tcp dport 80 ip saddr @q_walled_garden_4 dnat ip to 198.51.100.80:8080" in steer
    assert "@q_walled_garden_6_56 dnat ip6 to [2001:db8:80::80]:8080" in steer
    # Walled-garden prefix holds too, through their own interval set.
    assert "tcp dport 80 ip saddr @steer_ranges_4 dnat ip to 198.51.100.80:8080" in steer
    assert "ip6 saddr @steer_ranges_6 dnat ip6 to [2001:db8:80::80]:8080" in steer
    # Only port 80 is steered, and nothing on this path resets.
    assert "443" not in steer and "reject" not in steer
    assert "203.0.113.0/28 . 80,\n\t\t\t203.0.113.0/28 . 443" in script
    garden = script.split("chain quarantine_walled_garden {")[1].split("\n\t}")[0]
    assert "tcp dport { 80, 443, 8080 } ip daddr @portal_4 accept" in garden
    assert garden.index("@garden_allow_4 accept") < garden.index("drop")


def test_no_steering_no_nat_chain_and_no_allowlist(policy_state: DesiredState) -> None:
    script = str(render_full(policy_state, NOW).transaction)
    assert "type nat" not in script and "dnat" not in script and "garden_allow" not in script


def test_walled_garden_prefix_holds_are_steered_and_kept_by_deltas(
    policy_state: DesiredState,
) -> None:
    """``steer_ranges_<v>`` holds the walled-garden prefix holds (not other
    modes' and not exact keys), expired ones left out; a delta touching a
    walled prefix rewrites it, one touching an smtp prefix leaves it alone;
    without steering the set does not exist."""
    steering = _steering(policy_state)
    walled = Prefix.parse("100.64.20.0/24")
    smtp = Prefix.parse("100.64.21.0/24")
    v6 = Prefix.parse("2001:db8:1000:8000::/52")
    gone = Prefix.parse("100.64.22.0/24")
    quarantines = {
        **steering.quarantines,
        walled: Quarantine(walled, QuarantineMode.WALLED_GARDEN, None, NOW + timedelta(hours=1)),
        smtp: Quarantine(smtp, QuarantineMode.SMTP),
        v6: Quarantine(v6, QuarantineMode.WALLED_GARDEN),
        gone: Quarantine(gone, QuarantineMode.WALLED_GARDEN, None, NOW - timedelta(seconds=1)),
    }
    state = replace(steering, quarantines=quarantines)
    rendered = render_full(state, NOW)
    assert rendered.set_elements["steer_ranges_4"] == [
        "100.64.9.0/24",
        "100.64.20.0/24 timeout 3600s",
    ]
    assert rendered.set_elements["steer_ranges_6"] == ["2001:db8:1000:8000::/52"]
    assert "steer_ranges_4" not in render_full(policy_state, NOW).set_elements
    # Another walled prefix: a delta (the family had prefix holds already).
    more = Prefix.parse("100.64.23.0/24")
    after = replace(
        state,
        revision=state.revision + 1,
        quarantines={**quarantines, more: Quarantine(more, QuarantineMode.WALLED_GARDEN)},
    )
    delta = diff(state, after)
    assert not needs_full_sync(state, delta)
    commands = render_delta(state, delta, NOW).commands
    assert "flush set inet edgectl steer_ranges_4" in commands
    added = next(c for c in commands if c.startswith("add element inet edgectl steer_ranges_4"))
    for element in ("100.64.9.0/24", "100.64.20.0/24", "100.64.23.0/24"):
        assert element in added
    assert "100.64.21.0/24" not in added and "100.64.22.0/24" not in added
    # An smtp prefix: q_ranges_4 is rewritten, the steering set is not.
    other = Prefix.parse("100.64.24.0/24")
    smtp_after = replace(
        state,
        revision=state.revision + 1,
        quarantines={**quarantines, other: Quarantine(other, QuarantineMode.SMTP)},
    )
    commands = render_delta(state, diff(state, smtp_after), NOW).commands
    assert any("q_ranges_4" in c for c in commands)
    assert not any("steer_ranges" in c for c in commands)


def _unpacked(element: bytes) -> str:
    """An encoded NFTA_LIST_ELEM back as render writes it: ``addr`` or ``addr timeout Ns``."""
    import socket
    import struct

    from edgectl.agent.netlink.codec import iter_attrs
    from edgectl.agent.netlink.constants import (
        NFTA_DATA_VALUE,
        NFTA_LIST_ELEM,
        NFTA_SET_ELEM_KEY,
        NFTA_SET_ELEM_TIMEOUT,
    )

    ((kind, body),) = list(iter_attrs(element))
    assert kind == NFTA_LIST_ELEM
    attrs = dict(iter_attrs(body))
    assert set(attrs) <= {NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_TIMEOUT}
    ((value_kind, value),) = list(iter_attrs(attrs[NFTA_SET_ELEM_KEY]))
    assert value_kind == NFTA_DATA_VALUE
    text = socket.inet_ntop(socket.AF_INET if len(value) == 4 else socket.AF_INET6, value)
    if NFTA_SET_ELEM_TIMEOUT not in attrs:
        return text
    (milliseconds,) = struct.unpack(">Q", attrs[NFTA_SET_ELEM_TIMEOUT])
    assert milliseconds % 1000 == 0
    return f"{text} timeout {milliseconds // 1000}s"


def test_packed_keys_are_the_rendered_keys(policy_state: DesiredState) -> None:
    """``pack_keys`` (the element batch of a two-step restore) writes exactly the
    sets, keys and timeouts ``render_keys`` does: expired entries and prefix keys
    left out, IPv4 and IPv6, with and without a timeout."""
    from edgectl.agent.kernel_write import pack_keys
    from edgectl.agent.render import render_keys

    v6 = Prefix.parse("2001:db8:1000:300::/56")
    gone = Prefix.parse("100.64.0.30")
    state = replace(
        policy_state,
        quarantines={
            **policy_state.quarantines,
            v6: Quarantine(v6, QuarantineMode.BLOCK, expires=NOW + timedelta(seconds=90.5)),
            gone: Quarantine(gone, QuarantineMode.SMTP, expires=NOW - timedelta(seconds=1)),
        },
    )
    packed = pack_keys(state, NOW)
    rendered = {}
    for command in render_keys(state, NOW).commands:
        match = re.fullmatch(r"add element inet edgectl (\w+) \{\n\t(.*)\n\}", command, re.S)
        assert match, command
        rendered[match[1]] = match[2].split(",\n\t")
    assert {name: [_unpacked(e) for e in elements] for name, elements in packed.items()} == rendered
    assert "2001:db8:1000:300:: timeout 91s" in rendered["q_block_6_56"]
    assert all("100.64.0.30" not in elements for elements in rendered.values())


def _profiled(state: DesiredState, **caps: object) -> str:
    profile = replace(state.rate_limits[0], **caps)
    return str(render_full(replace(state, rate_limits=(profile,)), NOW).transaction)


@pytest.mark.parametrize(
    ("concurrent", "per_destination", "pair_rule"),
    [(3, 2, True), (3, 3, False), (3, 9, False), (None, 2, True)],
)
def test_a_pair_cap_renders_a_ct_count_only_where_it_can_decide(
    policy_state: DesiredState, concurrent: int | None, per_destination: int, pair_rule: bool
) -> None:
    script = _profiled(policy_state, concurrent=concurrent, per_destination=per_destination)
    assert ("@dest_" in script) is pair_rule
    assert ("chain over_destination_" in script) is pair_rule
    assert ("@conc_" in script) is (concurrent is not None)
    # The counter stays, so a scraped series does not vanish.
    assert "counter destination_" in script


def test_a_shadow_profile_keeps_both_caps_counting(policy_state: DesiredState) -> None:
    script = _profiled(policy_state, concurrent=3, per_destination=3, shadow=True)
    assert "@dest_" in script
    assert "@conc_" in script


def test_each_pool_chain_holds_its_own_family_only(policy_state: DesiredState) -> None:
    both = Pool(
        "dual",
        PoolKind.STATIC,
        (Prefix.parse("100.67.0.0/24"), Prefix.parse("2001:db8:3000::/40")),
        subscriber_prefix_len=56,
        rate_limit=policy_state.rate_limits[0].name,
    )
    state = replace(policy_state, pools=(*policy_state.pools, both))
    built = render_full(state, NOW)
    script = str(built.transaction)
    assert "100.67.0.0/24 : goto pool_dual_4" in script
    assert "2001:db8:3000::/40 : goto pool_dual_6" in script
    chain_4 = script.split("chain pool_dual_4 {")[1].split("}\n")[0]
    chain_6 = script.split("chain pool_dual_6 {")[1].split("}\n")[0]
    assert "ip6 " not in chain_4 and "ip saddr" in chain_4
    assert "ip saddr" not in chain_6 and "ip6 saddr" in chain_6
    assert "chain pool_dual {" not in script


@pytest.mark.parametrize("tracked", [True, False])
def test_a_packet_meets_only_its_own_family_rules(
    policy_state: DesiredState, tracked: bool
) -> None:
    settings = replace(policy_state.settings, track_non_mail=tracked)
    script = str(render_full(replace(policy_state, settings=settings), NOW).transaction)
    forward = script.split("chain forward {")[1].split("}\n")[0]
    gate_6 = script.split("chain gate_6 {")[1].split("}\n")[0]
    rules = [line.strip() for line in forward.splitlines()[2:] if line.strip()]
    assert rules[1 if tracked else 0].startswith("meta nfproto ipv6 goto gate_6")
    assert "ip6 " not in forward and "@q_block_4" in forward
    assert "ip saddr" not in gate_6 and "ip daddr" not in gate_6 and "@q_block_6_56" in gate_6
    assert "jump mail" in forward and "jump mail" in gate_6
    mail = [line.strip() for line in script.split("chain mail {")[1].split("}\n")[0].splitlines()]
    order = [
        next(i for i, rule in enumerate(mail) if rule.startswith(p))
        for p in (
            "ip saddr @q_smtp_4",
            "ip saddr vmap @pools_4",
            "ip6 saddr & ",
            "ip6 saddr vmap @pools_6",
        )
    ]
    assert order == sorted(order)
