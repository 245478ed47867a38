"""Which pool an address is in, when pools nest: the most specific prefix wins.

ISPs number business customers from a static /24 carved out of a dynamic
/16: both are pools, and an address in the /24 is static.  Prefixes never
partly overlap (two CIDR blocks are nested or disjoint), so longest-prefix
match over the pools' prefixes cuts the address space into disjoint
intervals, each owned by exactly one pool.  Those intervals are what the
kernel's ``pools_4/6`` interval map holds (nft refuses overlapping
elements) and what every address-to-pool question here answers from.

Exact duplicates (the same prefix twice) have no most specific owner and
stay an error (``duplicates``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import Generic, TypeVar

from edgectl.model.prefix import Prefix, range_prefixes

T = TypeVar("T")

_START_THEN_LENGTH = itemgetter(0, 1)


def duplicates(named: Iterable[tuple[str, Prefix]]) -> Iterator[tuple[str, str, Prefix]]:
    """(first owner, second owner, prefix) for every prefix listed more than once."""
    seen: dict[Prefix, str] = {}
    for name, prefix in named:
        if prefix in seen:
            yield seen[prefix], name, prefix
        else:
            seen[prefix] = name


class PoolMap(Generic[T]):
    """Longest-prefix match over ``(prefix, owner)`` pairs, as disjoint intervals."""

    def __init__(self, owned: Iterable[tuple[Prefix, T]]) -> None:
        self.intervals: list[tuple[int, int, int, T]] = []  # version, first, last, owner
        items = list(owned)
        for version in (4, 6):
            self._sweep(version, [item for item in items if item[0].version == version])
        self._starts = [(version, first) for version, first, _, _ in self.intervals]

    def _sweep(self, version: int, items: list[tuple[Prefix, T]]) -> None:
        # Every render and lint builds this over all pools (5,000 of them):
        # spans are plain tuples, no property or closure called per prefix.
        bits = 32 if version == 4 else 128
        spans = [
            (prefix.value, prefix.length, prefix.value | ((1 << (bits - prefix.length)) - 1), owner)
            for prefix, owner in items
        ]
        # Parents sort before their children (same start, shorter first).
        spans.sort(key=_START_THEN_LENGTH)
        # The most specific owner of each address, as (first, last, owner) in
        # order; a stack holds the (last, owner) of the prefixes that contain
        # the current position.
        pieces: list[tuple[int, int, T]] = []
        stack: list[tuple[int, T]] = []
        cursor = 0
        for first, _, last, owner in spans:
            while stack and stack[-1][0] < first:
                end, holder = stack.pop()
                if cursor <= end:
                    pieces.append((cursor, end, holder))
                    cursor = end + 1
            if stack and cursor < first:
                pieces.append((cursor, first - 1, stack[-1][1]))
            cursor = first
            stack.append((last, owner))
        while stack:
            end, holder = stack.pop()
            if cursor <= end:
                pieces.append((cursor, end, holder))
                cursor = end + 1
        # Adjacent pieces of the same owner are one interval.
        out = self.intervals
        previous: tuple[int, int, int, T] | None = None
        for first, last, owner in pieces:
            if (
                previous is not None
                and previous[2] + 1 == first
                and (previous[3] is owner or previous[3] == owner)
            ):
                previous = (version, previous[1], last, owner)
                out[-1] = previous
            else:
                previous = (version, first, last, owner)
                out.append(previous)

    def owner(self, address: Prefix) -> T | None:
        """The pool of the most specific prefix holding all of ``address``, or None."""
        index = bisect.bisect_right(self._starts, (address.version, address.value)) - 1
        if index < 0:
            return None
        version, _, last, owner = self.intervals[index]
        if version != address.version or address.last > last:
            return None
        return owner

    def owners(self, prefix: Prefix) -> list[T]:
        """Every pool owning some address of ``prefix`` (in address order, no repeats)."""
        found: list[T] = []
        index = max(0, bisect.bisect_right(self._starts, (prefix.version, prefix.value)) - 1)
        for version, first, last, owner in self.intervals[index:]:
            if version != prefix.version or first > prefix.last:
                break
            if last >= prefix.value and owner not in found:
                found.append(owner)
        return found

    def prefixes(self) -> Iterator[tuple[Prefix, T]]:
        """The intervals as the fewest prefixes each (what nft's interval map is given)."""
        for version, first, last, owner in self.intervals:
            for prefix in range_prefixes(version, first, last):
                yield prefix, owner
