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
from typing import Generic, TypeVar

from edgectl.model.prefix import Prefix, range_prefixes

T = TypeVar("T")


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
        # Parents sort before their children (same start, shorter first); a
        # stack holds the prefixes that contain the current position.
        items.sort(key=lambda item: (item[0].value, item[0].length))
        stack: list[tuple[Prefix, T]] = []
        cursor = 0
        out = self.intervals

        def emit(last: int, owner: T) -> None:
            nonlocal cursor
            if cursor > last:
                return
            previous = out[-1] if out else None
            if (
                previous is not None
                and previous[0] == version
                and previous[2] + 1 == cursor
                and previous[3] == owner
            ):
                out[-1] = (version, previous[1], last, owner)  # adjacent, same owner
            else:
                out.append((version, cursor, last, owner))
            cursor = last + 1

        for prefix, owner in items:
            while stack and stack[-1][0].last < prefix.value:
                ended, ended_owner = stack.pop()
                emit(ended.last, ended_owner)
            if stack:
                emit(prefix.value - 1, stack[-1][1])
            cursor = prefix.value
            stack.append((prefix, owner))
        while stack:
            ended, ended_owner = stack.pop()
            emit(ended.last, ended_owner)

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
