"""Lint's whole-list key check (``_keys_clear``) never passes what the per-key check refuses."""

from __future__ import annotations

import importlib
import random

import pytest

from edgectl.model import (
    DesiredState,
    Exemption,
    Pool,
    PoolKind,
    Prefix,
    Quarantine,
    QuarantineMode,
    Relay,
)

lint_module = importlib.import_module("edgectl.model.lint")

POOLS = (
    Pool("home", PoolKind.DYNAMIC, (Prefix.parse("100.64.0.0/16"),)),
    Pool("home6", PoolKind.DYNAMIC, (Prefix.parse("2001:db8:1000::/40"),), 56),
    Pool("biz", PoolKind.STATIC, (Prefix.parse("100.65.0.0/24"),)),
    # Nested in the dynamic pools: the most specific prefix wins.
    Pool("infra", PoolKind.INFRASTRUCTURE, (Prefix.parse("100.64.200.0/24"),)),
    Pool("infra6", PoolKind.INFRASTRUCTURE, (Prefix.parse("2001:db8:1000:ff00::/56"),)),
    Pool("biz_in_home", PoolKind.STATIC, (Prefix.parse("100.64.7.0/28"),)),
)
RELAYS = (Relay("mx", (Prefix.parse("100.65.0.25"),)),)


def _key(rng: random.Random) -> Prefix:
    """Mostly subscriber hosts and /56s, sometimes a key lint must refuse or look at."""
    roll = rng.random()
    if roll < 0.55:
        return Prefix(4, Prefix.parse("100.64.0.0").value + rng.randrange(1 << 17), 32)
    if roll < 0.8:
        return Prefix(6, Prefix.parse("2001:db8:1000::").value + (rng.randrange(1 << 16) << 72), 56)
    text = rng.choice(
        [
            "100.64.200.9",
            "100.65.0.25",
            "100.65.0.24/30",
            "100.64.199.0/24",
            "100.64.0.0/15",
            "0.0.0.0/0",
            "100.65.0.7",
            "100.64.7.3",
            "100.66.0.1",
            "2001:db8:1000:ff00::/56",
            "2001:db8:1000::/48",
            "2001:db8:1000:100::/64",
            "2001:db8:1000:100::/72",
            "2001:db8:2000::/56",
            "::/0",
        ]
    )
    return Prefix.parse(text)


def _state(rng: random.Random, count: int) -> DesiredState:
    keys = list({_key(rng) for _ in range(count)})
    modes = list(QuarantineMode)
    split = rng.randrange(len(keys) + 1)
    return DesiredState(
        gateway="gw",
        revision=1,
        pools=POOLS,
        relays=RELAYS,
        quarantines={k: Quarantine(k, rng.choice(modes)) for k in keys[:split]},
        exemptions={k: Exemption(k) for k in keys[split:]},
    )


def test_the_whole_list_check_agrees_with_the_per_key_check() -> None:
    rng = random.Random(10)
    clear = refused = 0
    for _ in range(600):
        state = _state(rng, rng.choice([1, 3, 20]))
        pools = lint_module._pool_kinds(state)
        protected = lint_module.PrefixIndex(
            [
                *lint_module._named_prefixes(state, [PoolKind.INFRASTRUCTURE]),
                *(("relays[mx]", p) for p in RELAYS[0].prefixes),
            ]
        )
        problems = list(lint_module._each_key(state, pools, protected))
        if lint_module._keys_clear(lint_module._held(state), protected, pools):
            assert problems == [], state
            clear += 1
        refused += bool(problems)
    # Both outcomes were exercised, not one of them vacuously.
    assert clear > 100 and refused > 100, (clear, refused)


@pytest.mark.parametrize(
    ("key", "held_as"),
    [
        ("100.64.200.9", "quarantines"),
        ("100.65.0.24/30", "quarantines"),
        ("2001:db8:1000:ff00::/56", "exemptions"),
        ("100.65.0.7", "exemptions"),
        ("2001:db8:2000::/56", "exemptions"),
        ("2001:db8:1000:100::/72", "quarantines"),
    ],
)
def test_one_bad_key_among_many_is_named(key: str, held_as: str) -> None:
    base = Prefix.parse("100.64.0.0").value
    good = [Prefix(4, base + 512 + i, 32) for i in range(5_000)]
    bad = Prefix.parse(key)
    quarantines = {k: Quarantine(k, QuarantineMode.SMTP) for k in good}
    exemptions: dict[Prefix, Exemption] = {}
    if held_as == "quarantines":
        quarantines[bad] = Quarantine(bad, QuarantineMode.BLOCK)
    else:
        exemptions[bad] = Exemption(bad)
    state = DesiredState(
        "gw", 1, pools=POOLS, relays=RELAYS, quarantines=quarantines, exemptions=exemptions
    )
    # (An exemption can be refused twice: protected, and in no dynamic pool.)
    assert {p.path for p in lint_module.lint(state)} == {f"{held_as}[{bad}]"}
