"""Nested pools: longest-prefix match compiled into disjoint intervals."""

from __future__ import annotations

import random

from edgectl.model.pool_map import PoolMap, duplicates, range_prefixes
from edgectl.model.prefix import Prefix

P = Prefix.parse


def test_a_static_24_carved_out_of_a_dynamic_16() -> None:
    pools = PoolMap([(P("100.64.0.0/16"), "dyn"), (P("100.64.7.0/24"), "static")])
    assert [(str(p), o) for p, o in pools.prefixes()] == [
        ("100.64.0.0/22", "dyn"),
        ("100.64.4.0/23", "dyn"),
        ("100.64.6.0/24", "dyn"),
        ("100.64.7.0/24", "static"),
        ("100.64.8.0/21", "dyn"),
        ("100.64.16.0/20", "dyn"),
        ("100.64.32.0/19", "dyn"),
        ("100.64.64.0/18", "dyn"),
        ("100.64.128.0/17", "dyn"),
    ]
    assert pools.owner(P("100.64.7.9")) == "static"
    assert pools.owner(P("100.64.8.1")) == "dyn"
    assert pools.owner(P("100.65.0.1")) is None
    assert pools.owners(P("100.64.0.0/16")) == ["dyn", "static"]
    assert pools.owners(P("100.64.7.128/25")) == ["static"]


def test_three_levels_and_ipv6_and_adjacent_prefixes_of_one_pool() -> None:
    pools = PoolMap(
        [
            (P("2001:db8::/32"), "outer"),
            (P("2001:db8:1000::/40"), "mid"),
            (P("2001:db8:1000:100::/56"), "inner"),
            (P("10.0.0.0/25"), "a"),
            (P("10.0.0.128/25"), "a"),
        ]
    )
    assert pools.owner(P("2001:db8:1000:100::1")) == "inner"
    assert pools.owner(P("2001:db8:1000:200::1")) == "mid"
    assert pools.owner(P("2001:db8:2000::1")) == "outer"
    assert pools.owner(P("2001:db8:1000::/40")) is None  # not all of it is "mid"
    assert [str(p) for p, o in pools.prefixes() if o == "a"] == ["10.0.0.0/24"]


def test_intervals_agree_with_a_brute_force_longest_match() -> None:
    rng = random.Random(7)
    owned = []
    for index in range(40):
        length = rng.randint(16, 28)
        value = (0x0A000000 + rng.randrange(1 << 16) * 256) & ~((1 << (32 - length)) - 1)
        owned.append((Prefix(4, value, length), f"p{index}"))
    unique = {prefix: owner for prefix, owner in reversed(owned)}
    pools = PoolMap(list(unique.items()))
    for _ in range(2000):
        address = Prefix(4, 0x0A000000 + rng.randrange(1 << 24), 32)
        best = max((p for p in unique if p.contains(address)), key=lambda p: p.length, default=None)
        assert pools.owner(address) == (None if best is None else unique[best])


def test_exact_duplicates_are_found_and_ranges_are_covered_exactly() -> None:
    found = list(
        duplicates([("a", P("10.0.0.0/24")), ("b", P("10.0.0.0/16")), ("c", P("10.0.0.0/24"))])
    )
    assert found == [("a", "c", P("10.0.0.0/24"))]
    covered = range_prefixes(4, 5, 300)
    assert covered[0].value == 5 and covered[-1].last == 300
    assert sum(1 << (32 - p.length) for p in covered) == 296
