"""IPv4/IPv6 prefixes: the one place where addresses are parsed and compared.

Parsing goes through ``socket.inet_pton`` (a gateway restores a million
quarantine keys at start-up, and netaddr cost 2.5-7.6 us a key against
0.1 us), and the set arithmetic (merging, overlap) is interval arithmetic
on the integers: netaddr, which did it before, cost every ``edgectl``
command ~40 ms of CPU to import for a few dozen lines.  netaddr stays the
reference the tests check ``merge`` against (tests/test_prefix_merge.py).
"""

from __future__ import annotations

import bisect
import socket
from collections.abc import Iterable
from functools import partial
from itertools import repeat
from operator import and_, contains, itemgetter
from typing import Any, NamedTuple

from edgectl.model.errors import ModelError

_BITS = {4: 32, 6: 128}
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_AF4, _AF6 = socket.AF_INET, socket.AF_INET6
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
# NamedTuple's own __new__ is a Python function; the tuple's is C.  Parsing
# a million keys at start-up calls it a million times (0.4 us each).
_new_tuple = tuple.__new__
_first, _second, _third = itemgetter(0), itemgetter(1), itemgetter(2)
_from_big = partial(int.from_bytes, byteorder="big")


class Prefix(NamedTuple):
    """A network prefix with no host bits set: ``100.64.0.0/10``, ``2001:db8::/56``.

    A NamedTuple so that hashing and comparing a million of them happen in C.
    """

    version: int
    value: int
    length: int

    @classmethod
    def parse(cls, text: object, *, path: str = "") -> Prefix:
        """Parse ``addr`` or ``addr/len``; a bare address is a host prefix.

        Host bits are an error, never truncated: ``100.64.0.1/10`` is a typo
        for either an address or a network, and guessing wrong would block
        or free a whole pool.
        """
        if not isinstance(text, str):
            raise ModelError(path, f"expected a prefix string, got {type(text).__name__}")
        address, slash, length_text = text.strip().partition("/")
        if ":" in address:
            version, family, bits = 6, _AF6, 128
        else:
            version, family, bits = 4, _AF4, 32
        try:
            packed = _inet_pton(family, address)
        except (OSError, ValueError, UnicodeError):
            # ValueError: an embedded NUL; UnicodeError: a lone surrogate.
            raise ModelError(path, f"{text!r} is not an IPv{version} address or prefix") from None
        value = int.from_bytes(packed, "big")
        if not slash:
            # A host address, most of a million keys: no length, no host bits to check.
            return _new_tuple(cls, (version, value, bits))
        # isdigit() alone accepts any script's digits (an Arabic-Indic one would parse as a /1).
        ascii_digits = length_text.isascii() and length_text.isdigit()
        if not ascii_digits or not 0 <= int(length_text) <= bits:
            raise ModelError(path, f"{text!r}: prefix length must be 0..{bits}")
        length = int(length_text)
        host_bits = value & ((1 << (bits - length)) - 1)
        if host_bits:
            network = cls(version, value & ~((1 << (bits - length)) - 1), length)
            raise ModelError(
                path,
                f"{text!r} has host bits set; write {network} for the network "
                f"or {address}/{bits} for the single address",
            )
        return _new_tuple(cls, (version, value, length))

    @classmethod
    def parse_many(cls, texts: list[Any]) -> list[Prefix] | None:
        """``parse`` of every text, in a few passes of C calls (a policy's 5,000
        pool prefixes, its IPv6 keys); None unless every text is a plain
        ``address`` (all of them) or ``address/length`` (all of them) of one
        IP version with no host bits.  None means "``parse`` each": it names
        the text at fault, and takes what this leaves to it (spaces around a
        prefix, a mix of forms).
        """
        if not texts:
            return []
        if set(map(type, texts)) != {str}:
            return None
        parts = list(map(str.partition, texts, repeat("/")))
        addresses = list(map(_first, parts))
        colons = list(map(contains, addresses, repeat(":")))
        if any(colons) and not all(colons):
            return None
        version, family, bits = (6, _AF6, 128) if colons[0] else (4, _AF4, 32)
        try:
            packed = list(map(_inet_pton, repeat(family), addresses))
        except (OSError, ValueError, UnicodeError):
            return None
        values = list(map(_from_big, packed))
        slashes = set(map(_second, parts))
        if slashes == {""}:
            lengths: list[int] = [bits] * len(texts)
        elif slashes == {"/"}:
            texts = list(map(_third, parts))
            # isdigit() alone takes any script's digits, int() also "1_0".
            if not (all(map(str.isascii, texts)) and all(map(str.isdigit, texts))):
                return None
            lengths = list(map(int, texts))
            if max(lengths) > bits:
                return None
            host_masks = [(1 << (bits - length)) - 1 for length in range(bits + 1)]
            if any(map(and_, values, map(host_masks.__getitem__, lengths))):
                return None
        else:
            return None
        return list(map(_new_tuple, repeat(cls), zip(repeat(version), values, lengths)))

    @property
    def bits(self) -> int:
        return _BITS[self.version]

    @property
    def is_host(self) -> bool:
        return self.length == self.bits

    @property
    def address(self) -> str:
        """The network address alone, as nftables prints it."""
        return socket.inet_ntop(_FAMILY[self.version], self.value.to_bytes(self.bits // 8, "big"))

    @property
    def last(self) -> int:
        return self.value | ((1 << (self.bits - self.length)) - 1)

    def __str__(self) -> str:
        # A single address prints bare, the way operators write it.  Spelt
        # out without the properties: a state file writes a million of these.
        version, value, length = self
        if version == 4:
            text = _inet_ntop(_AF4, value.to_bytes(4, "big"))
            return text if length == 32 else f"{text}/{length}"
        text = _inet_ntop(_AF6, value.to_bytes(16, "big"))
        return text if length == 128 else f"{text}/{length}"

    def contains(self, other: Prefix) -> bool:
        return (
            self.version == other.version
            and self.length <= other.length
            and self.value <= other.value <= self.last
        )

    def overlaps(self, other: Prefix) -> bool:
        return self.contains(other) or other.contains(self)

    def supernet(self, length: int) -> Prefix:
        """The prefix of ``length`` bits that contains this one."""
        if length > self.length:
            raise ValueError(f"/{length} is longer than {self}")
        return Prefix(self.version, self.value & ~((1 << (self.bits - length)) - 1), length)


def mask_text(version: int, length: int) -> str:
    """The netmask nftables needs to key an IPv6 set on a delegated prefix."""
    bits = _BITS[version]
    mask = ((1 << length) - 1) << (bits - length)
    return socket.inet_ntop(_FAMILY[version], mask.to_bytes(bits // 8, "big"))


def subscriber_key(address: Prefix, delegated_length: int) -> Prefix:
    """The key a subscriber is known by: an IPv4 /32, an IPv6 delegated prefix."""
    return address.supernet(delegated_length) if address.version == 6 else address


def range_prefixes(version: int, first: int, last: int) -> list[Prefix]:
    """The fewest prefixes covering exactly ``first``..``last``."""
    bits = _BITS[version]
    out = []
    while first <= last:
        # The largest aligned block starting at ``first`` that fits.
        size = (first & -first).bit_length() - 1 if first else bits
        while first + (1 << size) - 1 > last:
            size -= 1
        out.append(Prefix(version, first, bits - size))
        first += 1 << size
    return out


def _spans(prefixes: Iterable[Prefix]) -> list[tuple[int, int, int]]:
    """(version, first, last) of the prefixes' union: disjoint, sorted, adjacent ones joined."""
    merged: list[tuple[int, int, int]] = []
    for prefix in sorted(prefixes, key=lambda p: (p.version, p.value)):
        start, end = prefix.value, prefix.last
        if merged and merged[-1][0] == prefix.version and start <= merged[-1][2] + 1:
            version, first, last = merged[-1]
            merged[-1] = (version, first, max(last, end))
        else:
            merged.append((prefix.version, start, end))
    return merged


def merge(prefixes: Iterable[Prefix]) -> list[Prefix]:
    """The fewest prefixes covering the same space (nft interval sets refuse overlaps)."""
    return [
        p for version, first, last in _spans(prefixes) for p in range_prefixes(version, first, last)
    ]


class PrefixIndex:
    """Answers "which of these few prefixes overlaps this one?" for many queries.

    Lint asks it once per quarantine key (a million on a large gateway), so a
    query is a bisect over disjoint, merged ranges, not a scan of the list.
    """

    def __init__(self, named: Iterable[tuple[str, Prefix]]) -> None:
        self._entries = sorted(named, key=lambda item: (item[1].version, item[1].value))
        merged = _spans(prefix for _, prefix in self._entries)
        self._ranges = merged
        # Per IP version, the merged (disjoint, sorted) ranges' starts and
        # ends: a query is then one bisect and one comparison.
        self._starts = {v: [first for version, first, _ in merged if version == v] for v in (4, 6)}
        self._ends = {v: [last for version, _, last in merged if version == v] for v in (4, 6)}

    def merged(self, version: int) -> list[tuple[int, int]]:
        """The indexed prefixes of one IP version as disjoint, sorted (first, last) ranges."""
        return list(zip(self._starts[version], self._ends[version], strict=True))

    def overlaps_any(self, prefix: Prefix) -> bool:
        """Whether any indexed prefix overlaps ``prefix``: one bisect."""
        version, value, length = prefix
        last = value | ((1 << (_BITS[version] - length)) - 1)
        # The last range starting at or before the prefix's end is the only
        # one that can overlap it: the ranges are disjoint and sorted.
        index = bisect.bisect_right(self._starts[version], last) - 1
        return index >= 0 and self._ends[version][index] >= value

    def hits(self, prefix: Prefix) -> list[str]:
        """Names of the indexed prefixes that overlap ``prefix``, cheaply empty.

        Naming them scans the index: ask ``overlaps_any`` where a yes/no is
        all that is needed (an exemption inside a dynamic pool is the rule,
        and 40k exemptions x 5k pool prefixes was minutes of lint).
        """
        if not self.overlaps_any(prefix):
            return []
        return [name for name, other in self._entries if other.overlaps(prefix)]
