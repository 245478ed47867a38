"""``Topology.placements`` looks pools up by prefix length; it must answer what
testing every pool would (the most specific pool a gateway serves wins)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgectl.controller.compile import PlacedPool, Topology, key_in
from edgectl.model import Pool, PoolKind, Prefix

BASE = Prefix.parse("100.64.0.0/16").value


def _naive(topology: Topology, address: Prefix) -> list[tuple[PlacedPool, Prefix]]:
    containing = sorted(
        (
            (max(p.length for p in placed.pool.prefixes if p.contains(address)), index)
            for index, placed in enumerate(topology.pools)
            if any(p.contains(address) for p in placed.pool.prefixes)
        ),
        reverse=True,
    )
    found = []
    claimed: set[int] = set()
    for _, index in containing:
        placed = topology.pools[index]
        won = placed.gateways - claimed
        claimed |= placed.gateways
        if not won or placed.pool.kind is PoolKind.INFRASTRUCTURE:
            continue
        key = key_in(placed.pool, address)
        if key is not None:
            found.append((PlacedPool(placed.pool, frozenset(won)), key))
    return found


def _prefix(offset: int, length: int) -> Prefix:
    size = 1 << (32 - length)
    return Prefix(4, BASE + (offset % (1 << 16)) // size * size, length)


pool_prefix = st.builds(_prefix, st.integers(0, 65535), st.integers(16, 30))
placed_pool = st.builds(
    lambda n, kind, prefixes, gateways: PlacedPool(
        Pool(f"p{n}", kind, tuple(dict.fromkeys(prefixes))), frozenset(gateways)
    ),
    st.integers(0, 10**6),
    st.sampled_from([PoolKind.DYNAMIC, PoolKind.STATIC, PoolKind.INFRASTRUCTURE]),
    st.lists(pool_prefix, min_size=1, max_size=3),
    st.sets(st.integers(1, 4), min_size=1, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(placed_pool, max_size=8), st.lists(st.integers(0, 65535), max_size=20))
def test_the_length_index_answers_what_a_scan_of_every_pool_does(
    pools: list[PlacedPool], hosts: list[int]
) -> None:
    topology = Topology(pools)
    for host in hosts:
        address = Prefix(4, BASE + host, 32)
        assert topology.placements(address) == _naive(topology, address)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(placed_pool, max_size=8),
    st.lists(st.tuples(st.integers(0, 65535), st.integers(16, 32)), max_size=40),
)
def test_keyed_answers_whether_the_naive_scan_places_the_address(
    pools: list[PlacedPool], addresses: list[tuple[int, int]]
) -> None:
    """``keyed`` remembers its answers; asked twice in any order, each answer is
    still the scan's (a remembered answer never leaks to an address it does not fit)."""
    topology = Topology(pools)
    for _ in range(2):
        for offset, length in addresses:
            address = _prefix(offset, length)
            assert topology.keyed(address) is bool(_naive(topology, address))
