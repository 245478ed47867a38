"""Where a subscriber key lives in ``table inet edgectl``: written once, used everywhere.

Render (full and delta), plan and read-back all ask ``KeyLayout.place``
which set holds a key and how its element is written; ``MODE_LAYOUT`` says
where the packet path consults each mode's set; ``needs_full_sync`` is the
one place that decides whether a change can go in as elements.

Layout (one element per key, no key stored twice):

* an exact key (IPv4 /32, IPv6 at a delegated length in use) sits in one
  hash set per (mode, family, length): ``q_block_4``, ``q_smtp_6_56``,
  ``exempt_4``.  Hash sets load as fast as a hand-written script; one
  verdict map of the same 800k keys (``key : goto quarantine_<mode>``)
  cost nft 1.3-1.5x the CPU and 2.4x the peak memory to load (nftables
  1.0.6, 2 runs each, interleaved), and a data map (``: mark``) 1.3x and
  1.9x, so a single-lookup map would break the full-sync budget;
* any other key (a block of unassigned space) sits in the small interval
  map ``q_ranges_<v>`` (``prefix : jump quarantine_<mode>``) or interval
  set ``exempt_ranges_<v>``; a walled-garden one is also in
  ``steer_ranges_<v>`` while the gateway steers that family's HTTP.

A packet pays a lookup only in the sets that can act on it: ``block`` and
``walled-garden`` sets in the base chain (for new connections; ``block``
on every packet when non-mail is untracked), the ``smtp`` sets only in the
``mail`` chain, i.e. for new mail connections.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from edgectl.model.delta import StateDelta
from edgectl.model.keymap import KeyMap
from edgectl.model.policy import DesiredState, QuarantineMode
from edgectl.model.prefix import Prefix

EXEMPT = "exempt"
# A key's kind: its quarantine mode, or EXEMPT for an exemption.
Kind = QuarantineMode | str


def mode_id(mode: QuarantineMode) -> str:
    return mode.value.replace("-", "_")


@dataclass(frozen=True, slots=True)
class ModeLayout:
    """One quarantine mode on the packet path."""

    mode: QuarantineMode
    # Which chain looks the key up: "gate" (the base chain, every new
    # connection) or "mail" (new mail connections only: the mode acts on
    # nothing else, so other traffic need not pay its lookup).
    chain: str
    # Untracked (track_non_mail = false): checked on every packet, not only
    # on opening SYNs - open flows and bare ACK/RST floods are dropped too.
    every_packet: bool

    @property
    def ident(self) -> str:
        return mode_id(self.mode)

    @property
    def family(self) -> str:
        return f"q_{self.ident}"

    @property
    def target(self) -> str:
        return f"quarantine_{self.ident}"


# In the order the gate checks them.  The one table of how modes meet packets.
MODE_LAYOUT = (
    ModeLayout(QuarantineMode.BLOCK, chain="gate", every_packet=True),
    ModeLayout(QuarantineMode.WALLED_GARDEN, chain="gate", every_packet=False),
    ModeLayout(QuarantineMode.SMTP, chain="mail", every_packet=False),
)
MODES = tuple(m.mode for m in MODE_LAYOUT)
_BY_MODE = {m.mode: m for m in MODE_LAYOUT}


def layout_of(mode: QuarantineMode) -> ModeLayout:
    return _BY_MODE[mode]


def family_of(kind: Kind) -> str:
    return EXEMPT if kind == EXEMPT else _BY_MODE[QuarantineMode(kind)].family


def exact_set(family: str, version: int, length: int) -> str:
    """``q_block_4``, ``q_smtp_6_56``, ``exempt_6_64``: one hash set per key length."""
    return f"{family}_4" if version == 4 else f"{family}_6_{length}"


def ranges_set(kind: Kind, version: int) -> str:
    return f"{EXEMPT if kind == EXEMPT else 'q'}_ranges_{version}"


def steer_ranges_set(version: int) -> str:
    """``steer_ranges_<v>``: the walled-garden prefix holds, for the nat chain.

    The one place a key is stored twice: such a hold is also in
    ``q_ranges_<v>``, whose verdicts jump to filter chains a nat hook cannot
    run.  Prefix holds are few, so the copy is small.
    """
    return f"steer_ranges_{version}"


def is_exact(version: int, length: int, lengths: tuple[int, ...]) -> bool:
    return (version == 4 and length == 32) or (version == 6 and length in lengths)


def seconds_left(expires: datetime | None, now: datetime) -> int | None:
    """Whole seconds until ``expires`` (rounded up); 0 if already past; None if never."""
    if expires is None:
        return None
    return max(0, math.ceil((expires - now).total_seconds()))


_ntoa = socket.inet_ntoa
_version, _length = itemgetter(0), itemgetter(2)
_OCTETS = tuple(str(octet) for octet in range(256))


class KeyLayout:
    """Placement of keys for one gateway (its delegated IPv6 lengths)."""

    def __init__(self, lengths: tuple[int, ...]) -> None:
        self.lengths = lengths
        self._v4_cache: dict[int, str] = {}
        kinds: list[Kind] = [*MODES, EXEMPT]
        self._exact: dict[tuple[Kind, int, int], str] = {}
        for kind in kinds:
            family = family_of(kind)
            self._exact[kind, 4, 32] = exact_set(family, 4, 32)
            for length in lengths:
                self._exact[kind, 6, length] = exact_set(family, 6, length)

    def exact_names(self) -> dict[tuple[Kind, int, int], str]:
        """(kind, IP version, length) -> hash set, for loops that place many keys."""
        return dict(self._exact)

    def exact_sets(self) -> dict[Kind, list[tuple[int, int, str]]]:
        """Every hash set, by kind: (version, length, name)."""
        found: dict[Kind, list[tuple[int, int, str]]] = {}
        for (kind, version, length), name in self._exact.items():
            found.setdefault(kind, []).append((version, length, name))
        return found

    def place(self, key: Prefix, kind: Kind, seconds: int | None) -> tuple[str, str, bool]:
        """(set or map name, element text, exact?) for ``key`` held as ``kind``.

        ``seconds``: the kernel timeout (None: none).
        """
        version, _, length = key
        name = self._exact.get((kind, version, length))
        if name is not None:
            return name, self._text(key, seconds), True
        timeout = "" if seconds is None else f" timeout {seconds}s"
        if kind == EXEMPT:
            return ranges_set(kind, version), f"{key}{timeout}", False
        target = _BY_MODE[QuarantineMode(kind)].target
        return ranges_set(kind, version), f"{key}{timeout} : jump {target}", False

    def _text(self, key: Prefix, seconds: int | None) -> str:
        version, value, _ = key
        text = self._v4_prefix(value >> 8) + _OCTETS[value & 255] if version == 4 else key.address
        return text if seconds is None else f"{text} timeout {seconds}s"

    def _v4_prefix(self, high: int) -> str:
        """``"100.64.3."`` for the /24 ``high``: keys cluster in pool /24s."""
        text = self._v4_cache.get(high)
        if text is None:
            text = self._v4_cache[high] = _ntoa((high << 8).to_bytes(4, "big"))[:-1]
        return text

    def fill(
        self,
        entries: Iterable[tuple[Prefix, Any]],
        kind: Kind | None,
        now: datetime,
        exact: dict[str, list[str]],
        ranges: dict[str, list[tuple[Prefix, str]]],
    ) -> None:
        """``place`` for many held entries at once: the hot loop of a full sync.

        ``kind`` None: each entry's own ``mode``.  Appends element texts to
        ``exact``/``ranges`` by set name, leaving out expired entries (the
        kernel would time them out at once).  It is ``place`` with its
        per-call costs hoisted (a million calls and an address conversion
        each were most of a million-key render), so it must write what
        ``place`` writes: tests/test_render.py compares them.
        """
        names = self._exact
        cache = self._v4_cache
        prefix_of = self._v4_prefix
        octets = _OCTETS
        ceil = math.ceil
        for key, entry in entries:
            expires = entry.expires
            seconds = None
            if expires is not None:
                seconds = ceil((expires - now).total_seconds())
                if seconds <= 0:
                    continue
            held = entry.mode if kind is None else kind
            version, value, length = key
            name = names.get((held, version, length))
            if name is None:
                name, text, _ = self.place(key, held, seconds)
                ranges[name].append((key, text))
                continue
            if version == 4:
                text = (cache.get(value >> 8) or prefix_of(value >> 8)) + octets[value & 255]
            else:
                text = key.address
            exact[name].append(text if seconds is None else f"{text} timeout {seconds}s")

    def is_exact(self, key: Prefix) -> bool:
        return is_exact(key[0], key[2], self.lengths)

    def range_families(self, entries: Mapping[Prefix, object]) -> set[int]:
        """IP versions with at least one key that is not exact (expired or not)."""
        shapes: Iterable[tuple[int, int]]
        if isinstance(entries, KeyMap):
            shapes = entries.shapes()
        else:
            # C calls only: a per-key comprehension was ~35 ms at 200k keys.
            shapes = set(zip(map(_version, entries), map(_length, entries), strict=True))
        return {v for v, n in shapes if not is_exact(v, n, self.lengths)}


# Placement depends on the pools only (their delegated lengths); a delta
# keeps the pools tuple it had, so the layout is memoised on its identity:
# walking 5,000 pools costs ~0.5 ms, a quarter of a delta's budget.
_LAYOUTS: dict[int, tuple[object, KeyLayout]] = {}


def layout_for(state: DesiredState) -> KeyLayout:
    """The KeyLayout of ``state``'s pools (memoised per pools tuple)."""
    pools = state.pools
    hit = _LAYOUTS.get(id(pools))
    if hit is not None and hit[0] is pools:
        return hit[1]
    layout = KeyLayout(state.delegated_lengths())
    if len(_LAYOUTS) >= 8:
        _LAYOUTS.clear()
    _LAYOUTS[id(pools)] = (pools, layout)
    return layout


def needs_full_sync(old: DesiredState, delta: StateDelta) -> bool:
    """The one decision between an element delta and a full sync.

    Elements suffice unless the delta changes the structure (chains, rules)
    or makes a family gain or lose its prefix quarantines, which adds or
    removes the interval-map rule in the base chain.
    """
    if delta.structure is not None:
        return True
    layout = layout_for(old)
    touched = [*delta.quarantines.removals, *(q.key for q in delta.quarantines.upserts)]
    if all(is_exact(key[0], key[2], layout.lengths) for key in touched):
        return False  # the common case: exact keys only
    # Rare (prefix quarantines are few): the shape counts of the new
    # version cost the touched shards once the map is a KeyMap.
    old_keys = KeyMap.of(old.quarantines)
    new_keys = old_keys.updated(
        delta.quarantines.removals, ((q.key, q) for q in delta.quarantines.upserts)
    )
    return layout.range_families(old_keys) != layout.range_families(new_keys)
