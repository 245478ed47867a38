"""Recent offenders: which subscribers hit a block rule, from the rules' log events.

Each block rule logs ``edgectl <what>: `` (render.py ``log()``); the NFLOG
listener hands over (prefix, source address) pairs and this book turns them
into report entries for abuse staff:

* **key**: the subscriber, as the table keys it: an IPv4 /32; for IPv6 the
  source masked to the delegated length (``subscriber_prefix_len``) of the
  applied pool that contains it.  An IPv6 source in no pool (possible only
  for a quarantine rule, or a packet logged just before its pool was
  removed) is keyed on its /64: every delegation is a /64 or shorter, so a
  /64 never mixes two subscribers, while a /128 would let one subscriber
  appear as any number of entries (and fill the book) by changing addresses.
* **kind / policy / shadow** from the prefix: ``ratelimit``,
  ``concurrency``, ``destinationlimit`` (policy: the profile),
  ``op25b`` (the pool), ``quarantine`` (the mode); ``shadow`` when the rule
  only counts.  Shadow and enforced events are separate entries: one was
  let through, the other refused.
* **count, first_seen, last_seen** per (key, kind, policy, shadow).  An
  entry is an episode: it ends ``window`` seconds after its last event, so a
  subscriber that keeps offending stays listed with a growing count.  The
  two times are wall clock, for people; expiry runs on the monotonic clock,
  so a stepped wall clock never ends an episode early or keeps it late.
  After a backward step, ``last_seen`` is held at ``first_seen`` rather
  than reported before it (the controller refuses such an entry, and with
  it the whole status report).

What a count means: log events, not refusals.  Each log rule is limited to
``log_per_second`` events (burst twice that) for *all* subscribers together
(nft ``limit`` in the rule, not per key), so under a flood the counts are a
sample; the named counters (``rate_<profile>`` ...) hold the exact totals.

Memory is bounded: at most ``max_tracked`` entries (10,000: ~3.3 MB), the
least recently seen evicted first; a report carries at most
``max_reported`` (1,000), the highest counts first.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgectl.agent.nflog import LogEvent
from edgectl.agent.render import LOG_PREFIX
from edgectl.model.offenders import MAX_REPORTED, WINDOW_MAX
from edgectl.model.policy import NAME_PATTERN, Pool, QuarantineMode
from edgectl.model.pool_map import PoolMap
from edgectl.model.prefix import Prefix

DEFAULT_WINDOW = 900.0
MAX_TRACKED = 10_000
# IPv6 key length for a source in no pool (see the module docstring).
OUTSIDE_POOLS_V6 = 64

_PROFILE_KINDS = frozenset({"ratelimit", "concurrency", "destinationlimit"})
_MODES = frozenset(mode.value for mode in QuarantineMode)
# Distinct prefixes remembered parsed; the table has a handful of log rules,
# anything beyond this is someone else's rules logging to our group.
_PARSED_CACHE = 1024


@dataclass(frozen=True, slots=True)
class Rule:
    """What a log prefix says about the rule that logged."""

    kind: str
    policy: str
    shadow: bool


def parse_prefix(text: str) -> Rule | None:
    """``"edgectl ratelimit profile=home shadow: "`` -> Rule; None if it is not ours."""
    head, _, rest = text.strip().removesuffix(":").partition(" ")
    if head != LOG_PREFIX:
        return None
    words = rest.split()
    shadow = words[-1:] == ["shadow"]
    if shadow:
        words = words[:-1]
    if len(words) == 1 and words[0].startswith("quarantine=") and not shadow:
        mode = words[0].removeprefix("quarantine=")
        return Rule("quarantine", mode, False) if mode in _MODES else None
    if len(words) != 2:
        return None
    kind, label = words
    field = "pool=" if kind == "op25b" else "profile=" if kind in _PROFILE_KINDS else None
    if field is None or not label.startswith(field):
        return None
    name = label.removeprefix(field)
    return Rule(kind, name, shadow) if NAME_PATTERN.match(name) else None


def key_text(key: Prefix) -> str:
    """Always with the length (``100.64.1.7/32``): the report names prefixes, not hosts."""
    return f"{key.address}/{key.length}"


class KeyMapper:
    """Source address -> subscriber key, by the pools of the applied state."""

    def __init__(self, pools: Iterable[Pool] = ()) -> None:
        # Pools may nest: the most specific prefix decides the delegation,
        # as in the kernel's pools_6 map.
        self._pools = PoolMap(
            (prefix, pool.subscriber_prefix_len or OUTSIDE_POOLS_V6)
            for pool in pools
            for prefix in pool.prefixes
            if prefix.version == 6
        )

    def key(self, source: Prefix) -> Prefix:
        if source.version == 4:
            return source.supernet(32)
        length = self._pools.owner(source)
        return source.supernet(OUTSIDE_POOLS_V6 if length is None else length)


@dataclass(slots=True)
class _Entry:
    count: int
    first_seen: float  # wall time (for the report)
    last_seen: float
    last_tick: float  # monotonic (for expiry: immune to clock steps)


_Id = tuple[Prefix, str, str, bool]  # key, kind, policy, shadow


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


class OffenderBook:
    """Thread-safe: the listener records, the reporter reads."""

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        *,
        max_tracked: int = MAX_TRACKED,
        max_reported: int = MAX_REPORTED,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        # The controller refuses a report beyond its limits, and the whole
        # status report with it: refuse such a book here instead.
        if not 0 < window <= WINDOW_MAX:
            raise ValueError(f"window must be in (0, {WINDOW_MAX}] seconds, not {window}")
        if max_tracked < 1:
            raise ValueError(f"max_tracked must be at least 1, not {max_tracked}")
        if not 0 <= max_reported <= MAX_REPORTED:
            raise ValueError(f"max_reported must be in 0..{MAX_REPORTED}, not {max_reported}")
        self.window = window
        self.max_tracked = max_tracked
        self.max_reported = max_reported
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._mapper = KeyMapper()
        self._pools: tuple[Pool, ...] | None = None
        # Least recently seen first: expiry and eviction both pop from the front.
        self._entries: OrderedDict[_Id, _Entry] = OrderedDict()
        self._parsed: dict[str, Rule | None] = {}
        self.evicted = 0  # entries dropped for room before their window ended
        self.ignored = 0  # events with a prefix not ours, or no source address

    def follow(self, pools: tuple[Pool, ...]) -> None:
        """Key later events by these pools (a new revision may change delegations)."""
        # Called after every commit, but a delta without a structure change
        # carries the very same pools tuple on: no need to index them again.
        if pools is self._pools:
            return
        mapper = KeyMapper(pools)
        with self._lock:
            self._mapper, self._pools = mapper, pools

    def _rule(self, prefix: str) -> Rule | None:
        try:
            return self._parsed[prefix]
        except KeyError:
            pass
        if len(self._parsed) >= _PARSED_CACHE:
            self._parsed.clear()
        rule = self._parsed[prefix] = parse_prefix(prefix)
        return rule

    def record(self, events: Iterable[LogEvent]) -> int:
        """Count each event against its subscriber; returns how many were ours."""
        tick = self._clock()
        wall = self._wall()
        recorded = 0
        with self._lock:
            entries = self._entries
            for event in events:
                rule = self._rule(event.prefix)
                if rule is None or event.source is None:
                    self.ignored += 1
                    continue
                ident = (self._mapper.key(event.source), rule.kind, rule.policy, rule.shadow)
                entry = entries.get(ident)
                if entry is None:
                    if len(entries) >= self.max_tracked:
                        entries.popitem(last=False)
                        self.evicted += 1
                    entries[ident] = _Entry(1, wall, wall, tick)
                else:
                    entry.count += 1
                    # A wall clock stepped back since first_seen: never report
                    # an episode that ends before it began.
                    entry.last_seen = max(wall, entry.first_seen)
                    entry.last_tick = tick
                    entries.move_to_end(ident)
                recorded += 1
            self._expire(tick)
        return recorded

    def _expire(self, tick: float) -> None:
        entries = self._entries
        cutoff = tick - self.window
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.last_tick >= cutoff:
                break
            entries.popitem(last=False)

    def expire(self) -> int:
        """Drop entries whose window has passed; returns how many remain."""
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def entries(self) -> list[dict[str, Any]]:
        """The report's entries: at most ``max_reported``, highest count first."""
        with self._lock:
            self._expire(self._clock())
            top = heapq.nlargest(
                self.max_reported,
                self._entries.items(),
                key=lambda item: (item[1].count, item[1].last_tick),
            )
            # Copied under the lock: the listener updates entries in place,
            # and one read half before and half after an event would report
            # a count that does not match its last_seen.
            taken = [(ident, e.count, e.first_seen, e.last_seen) for ident, e in top]
        # Formatted outside it, so the listener waits only for the copy.
        return [
            {
                "key": key_text(key),
                "kind": kind,
                "policy": policy,
                "shadow": shadow,
                "count": count,
                "first_seen": _iso(first_seen),
                "last_seen": _iso(last_seen),
            }
            for (key, kind, policy, shadow), count, first_seen, last_seen in taken
        ]
