"""prefix.merge: interval arithmetic on the integers, checked address by address and
against netaddr's cidr_merge (an implementation written by others)."""

from __future__ import annotations

import random
from itertools import pairwise

import netaddr

from edgectl.model.prefix import Prefix, merge


def _addresses(prefixes: list[Prefix]) -> set[tuple[int, int]]:
    return {(p.version, a) for p in prefixes for a in range(p.value, p.last + 1)}


def test_merge_covers_the_same_addresses_with_the_fewest_prefixes() -> None:
    rng = random.Random(7)
    base4 = Prefix.parse("100.64.0.0").value
    base6 = Prefix.parse("2001:db8::").value
    for _ in range(300):
        prefixes = []
        for _ in range(rng.randrange(1, 12)):
            length = rng.randrange(22, 33)
            value = base4 + (rng.randrange(1 << 10) >> (32 - length) << (32 - length))
            prefixes.append(Prefix(4, value, length))
            length6 = rng.randrange(118, 129)
            value6 = base6 + (rng.randrange(1 << 10) >> (128 - length6) << (128 - length6))
            prefixes.append(Prefix(6, value6, length6))
        merged = merge(prefixes)
        assert _addresses(merged) == _addresses(prefixes)
        reference = netaddr.cidr_merge([netaddr.IPNetwork(str(p)) for p in prefixes])
        assert [(p.version, p.value, p.length) for p in merged] == sorted(
            (n.version, int(n.network), n.prefixlen) for n in reference
        )
        assert merged == sorted(merged)
        for first, second in pairwise(merged):
            assert first.version != second.version or first.last < second.value  # disjoint
            # Fewest: no two neighbours are the halves of one prefix.
            if first.version == second.version and first.length == second.length:
                parent = first.supernet(first.length - 1) if first.length else None
                assert parent is None or not parent.contains(second), (first, second)


def test_merge_of_nothing_and_of_everything() -> None:
    assert merge([]) == []
    everything = [Prefix.parse("0.0.0.0/1"), Prefix.parse("128.0.0.0/1"), Prefix.parse("::/0")]
    assert merge(everything) == [Prefix.parse("0.0.0.0/0"), Prefix.parse("::/0")]
