"""A persistent map of subscriber keys: a new version per change, old ones intact.

An agent holds a million quarantine keys and applies one-key deltas all day.
Copying a dict of a million entries per delta costs ~80 ms; mutating it in
place would race the threads that still read the previous version (the
state-file writer serialising a snapshot, the offender listener).  So the
entries are spread over ``SHARDS`` small dicts by key hash, and a change
copies only the shards it touches: a one-key change at a million keys
copies ~250 entries, whatever the total.  Every version is immutable, so
any thread may keep reading one.

It also counts keys per (IP version, prefix length), which is what the
dataplane needs to know to place keys (exact hash sets vs interval maps)
without walking every key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from edgectl.model.prefix import Prefix

V = TypeVar("V")

# A power of two: the shard is the key's hash masked.  4,096 shards keep a
# shard at ~250 entries at a million keys and cost ~4,096 empty dicts
# (~260 KiB) for a small state.
SHARDS = 4096
_MASK = SHARDS - 1

Shape = tuple[int, int]  # (IP version, prefix length)


class KeyMap(Mapping[Prefix, V]):
    __slots__ = ("_len", "_shapes", "_shards")

    def __init__(self, items: Iterable[tuple[Prefix, V]] = ()) -> None:
        shards: list[dict[Prefix, V]] = [{} for _ in range(SHARDS)]
        shapes: dict[Shape, int] = {}
        for key, value in items:
            shard = shards[hash(key) & _MASK]
            if key not in shard:
                shape = (key[0], key[2])
                shapes[shape] = shapes.get(shape, 0) + 1
            shard[key] = value
        self._shards = tuple(shards)
        self._shapes = shapes
        self._len = sum(shapes.values())

    @classmethod
    def of(cls, mapping: Mapping[Prefix, V]) -> KeyMap[V]:
        """``mapping`` as a KeyMap: itself if it is one already (they are immutable)."""
        if isinstance(mapping, KeyMap):
            return mapping
        return cls(mapping.items())

    def __getitem__(self, key: Prefix) -> V:
        return self._shards[hash(key) & _MASK][key]

    def get(self, key: Prefix, default: V | None = None) -> V | None:  # type: ignore[override]
        return self._shards[hash(key) & _MASK].get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._shards[hash(key) & _MASK]

    def __iter__(self) -> Iterator[Prefix]:
        for shard in self._shards:
            yield from shard

    def __len__(self) -> int:
        return self._len

    def items(self) -> Iterator[tuple[Prefix, V]]:  # type: ignore[override]
        for shard in self._shards:
            yield from shard.items()

    def values(self) -> Iterator[V]:  # type: ignore[override]
        for shard in self._shards:
            yield from shard.values()

    def shapes(self) -> Mapping[Shape, int]:
        """How many keys there are of each (IP version, prefix length)."""
        return self._shapes

    def updated(self, removals: Iterable[Prefix], upserts: Iterable[tuple[Prefix, V]]) -> KeyMap[V]:
        """A new version with ``removals`` gone, then ``upserts`` set; this one unchanged.

        Costs the touched shards, not the map.
        """
        shards = list(self._shards)
        copied: set[int] = set()
        shapes = dict(self._shapes)
        length = self._len

        def writable(key: Prefix) -> dict[Prefix, V]:
            index = hash(key) & _MASK
            if index not in copied:
                copied.add(index)
                shards[index] = dict(shards[index])
            return shards[index]

        for key in removals:
            shard = writable(key)
            if shard.pop(key, _MISSING) is not _MISSING:
                shape = (key[0], key[2])
                shapes[shape] -= 1
                length -= 1
        for key, value in upserts:
            shard = writable(key)
            if key not in shard:
                shape = (key[0], key[2])
                shapes[shape] = shapes.get(shape, 0) + 1
                length += 1
            shard[key] = value
        result: KeyMap[V] = KeyMap.__new__(KeyMap)
        result._shards = tuple(shards)
        result._shapes = {shape: count for shape, count in shapes.items() if count}
        result._len = length
        return result

    def __repr__(self) -> str:
        return f"KeyMap({len(self)} keys)"


_MISSING = object()
