"""Compile: stored objects -> the entries and structure one gateway enforces.

Pure functions over model values; the store decides which holds and which
keys to feed in, so that a change costs what it touches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgectl.model import (
    MODE_POLICY,
    DesiredState,
    Exemption,
    GatewaySettings,
    ModelError,
    Pool,
    PoolKind,
    Prefix,
    Quarantine,
    QuarantineMode,
    RateLimitProfile,
    Relay,
    enforced_mode,
    lint,
)
from edgectl.model.prefix import PrefixIndex, subscriber_key
from edgectl.model.serial import (
    exemption_to_data,
    pool_to_data,
    profile_to_data,
    quarantine_to_data,
    relay_to_data,
    settings_to_data,
)

log = logging.getLogger(__name__)

QUARANTINE = "q"
EXEMPTION = "e"


def hex_of(prefix: Prefix) -> str:
    """Fixed-width hex of the network address: sorts like the address itself."""
    return f"{prefix.value:0{prefix.bits // 4}x}"


def hex_range(prefix: Prefix) -> tuple[str, str]:
    width = prefix.bits // 4
    return f"{prefix.value:0{width}x}", f"{prefix.last:0{width}x}"


@dataclass(frozen=True, slots=True)
class PlacedPool:
    pool: Pool
    gateways: frozenset[int]


@dataclass(frozen=True, slots=True)
class Hold:
    """A quarantine or exemption at one address (an account's, or a bare prefix)."""

    kind: str
    address: Prefix
    account: str | None = None
    mode: QuarantineMode | None = None
    ticket: str | None = None
    expires: datetime | None = None


def key_in(pool: Pool, address: Prefix) -> Prefix | None:
    """The subscriber key of ``address`` in ``pool``, None when it cannot have one.

    An IPv6 prefix shorter than the pool's delegation spans several
    subscribers; the session feed refuses it, so here it only means a pool
    changed under an old binding.
    """
    if address.version == 4:
        return address if address.is_host else None
    length = pool.key_length(6)
    if address.length < length:
        return None
    return subscriber_key(address, length)


class Topology:
    """Which pools (and so which gateways) an address falls in.

    ``relays`` and ``garden`` (the gateways with resolvers and a portal) let
    compile keep every served state lint-clean whatever sessions do later:
    an agent refuses a whole state that lint refuses.
    """

    def __init__(
        self,
        pools: Iterable[PlacedPool],
        relays: Iterable[Prefix] = (),
        garden: frozenset[int] | None = None,
    ) -> None:
        self.pools = tuple(pools)
        self.relays = PrefixIndex((str(p), p) for p in relays)
        self.garden = garden
        # Per IP version, longest length first: (length, pool prefix value ->
        # indexes of the pools with that prefix).  An address is looked up
        # once per distinct length, not tested against every pool (the feed
        # and the session routes ask for every binding, and an ISP has
        # thousands of pools).
        by_length: dict[tuple[int, int], dict[int, list[int]]] = {}
        for index, placed in enumerate(self.pools):
            for prefix in placed.pool.prefixes:
                values = by_length.setdefault((prefix.version, prefix.length), {})
                values.setdefault(prefix.value, []).append(index)
        self._lengths: dict[int, list[tuple[int, int, dict[int, list[int]]]]] = {4: [], 6: []}
        for (version, length), values in sorted(by_length.items(), key=lambda i: -i[0][1]):
            bits = 32 if version == 4 else 128
            mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
            self._lengths[version].append((length, mask, values))
        # ``keyed``'s answers by what decides them (see there).
        self._keyed: dict[tuple[int, ...], bool] = {}

    def _containing(self, address: Prefix) -> list[int]:
        """Indexes of the pools containing ``address``, the most specific first
        (by each pool's longest prefix containing it; ties by index, descending)."""
        found: list[int] = []
        seen: set[int] = set()
        for length, mask, values in self._lengths[address.version]:
            if length > address.length:
                continue
            indexes = values.get(address.value & mask)
            if indexes:
                for index in sorted(indexes, reverse=True):
                    if index not in seen:
                        seen.add(index)
                        found.append(index)
        return found

    def placements(self, address: Prefix) -> list[tuple[PlacedPool, Prefix]]:
        """The pool ``address`` is in on each gateway, with its key there.

        Pools may nest (a static /24 carved out of a dynamic /16): on each
        gateway the most specific pool that gateway serves wins, as its
        kernel's pool map decides.  Each returned pool carries only the
        gateways where it won.
        """
        found = []
        claimed: set[int] = set()
        for index in self._containing(address):
            placed = self.pools[index]
            won = placed.gateways - claimed
            claimed |= placed.gateways
            if not won or placed.pool.kind is PoolKind.INFRASTRUCTURE:
                continue  # infrastructure: not subscribers, nothing to hold or exempt
            key = key_in(placed.pool, address)
            if key is not None:
                found.append((PlacedPool(placed.pool, frozenset(won)), key))
        return found

    def keys(self, addresses: Iterable[Prefix]) -> set[Prefix]:
        return {key for address in addresses for _, key in self.placements(address)}

    def keyed(self, address: Prefix) -> bool:
        """Whether ``address`` has a key on some gateway (``keys([address])`` is not empty).

        The feed asks for every event, and ``placements`` builds what it
        returns; whether it returns anything depends only on the pool
        prefixes containing the address (each one's network value at its
        length) and on the address's version and length (``key_in``), so the
        answer is remembered by those.
        """
        value, length = address.value, address.length
        decides = [address.version, length]
        for prefix_length, mask, values in self._lengths[address.version]:
            if prefix_length <= length and (masked := value & mask) in values:
                decides += (prefix_length, masked)
        memo = tuple(decides)
        known = self._keyed.get(memo)
        if known is None:
            known = self._keyed[memo] = bool(self.placements(address))
        return known


EntryKey = tuple[int, str, str]  # gateway id, kind, key text


def _rank(hold: Hold) -> tuple[Any, ...]:
    # The harsher hold wins a key (MODE_POLICY's severity); exemptions rank 0.
    severity = MODE_POLICY[hold.mode].severity if hold.mode is not None else 0
    expiry = hold.expires.timestamp() if hold.expires is not None else float("inf")
    return (severity, hold.account is not None, expiry, hold.account or "", hold.ticket or "")


def _payload(hold: Hold, key: Prefix, mode: QuarantineMode | None) -> str:
    if hold.kind == QUARANTINE:
        assert mode is not None
        data = quarantine_to_data(Quarantine(key, mode, hold.account, hold.expires))
    else:
        data = exemption_to_data(Exemption(key, hold.account, hold.ticket, hold.expires))
    return json.dumps(data, separators=(",", ":"))


def compile_entries(
    topology: Topology,
    holds: Iterable[Hold],
    *,
    only_keys: set[Prefix] | None = None,
    only_gateway: int | None = None,
) -> dict[EntryKey, str]:
    """The entry payload (model JSON) for each (gateway, kind, key) the holds produce."""
    chosen: dict[EntryKey, tuple[tuple[Any, ...], Hold, Prefix]] = {}
    for hold in holds:
        for placed, key in topology.placements(hold.address):
            if only_keys is not None and key not in only_keys:
                continue
            if topology.relays.hits(key):
                # A relay inside a static pool: holding it would stop the ISP's
                # own mail (the API refuses it; a later session move must not sneak it in).
                log.warning("not holding %s: it covers a relay", key)
                continue
            # OP25B only applies to dynamic pools; an exemption elsewhere is moot.
            if hold.kind == EXEMPTION and placed.pool.kind is not PoolKind.DYNAMIC:
                continue
            rank = _rank(hold)
            for gateway in placed.gateways:
                if only_gateway is not None and gateway != only_gateway:
                    continue
                slot = (gateway, hold.kind, str(key))
                current = chosen.get(slot)
                if current is None or rank > current[0]:
                    chosen[slot] = (rank, hold, key)
    return {
        slot: _payload(hold, key, _mode(topology, slot[0], hold.mode))
        for slot, (_, hold, key) in chosen.items()
    }


def _mode(topology: Topology, gateway: int, mode: QuarantineMode | None) -> QuarantineMode | None:
    """A mode whose needs the gateway lacks (walled-garden, no garden) is its fallback.

    The API refuses walled-garden for an account whose gateway lacks one,
    but the account may move later; lint would then refuse the gateway's
    whole state, so the stricter fallback (MODE_POLICY) is served instead.
    """
    garden = topology.garden
    if mode is None or garden is None:
        return mode
    return enforced_mode(mode, gateway in garden)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The slow-changing objects every gateway's structure is compiled from."""

    pools: Mapping[str, Pool]
    relays: tuple[Relay, ...]
    profiles: Mapping[str, RateLimitProfile]


def structure_json(settings: GatewaySettings, pools: Iterable[Pool], catalogue: Catalogue) -> str:
    """A gateway's settings, pools, relays and the profiles its pools use, as JSON text.

    Only profiles its own pools reference: changing another gateway's
    profile must not produce a delta here.
    """
    served = sorted(pools, key=lambda p: p.name)
    used = sorted({p.rate_limit for p in served if p.rate_limit is not None})
    document = {
        "settings": settings_to_data(settings),
        "pools": [pool_to_data(p) for p in served],
        "relays": [relay_to_data(r) for r in sorted(catalogue.relays, key=lambda r: r.name)],
        "rate_limits": [
            profile_to_data(catalogue.profiles[name]) for name in used if name in catalogue.profiles
        ],
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=False)


def guard(
    catalogue: Catalogue,
    *,
    quarantines: Iterable[tuple[Prefix, QuarantineMode]] = (),
    exemptions: Iterable[Prefix] = (),
    settings: GatewaySettings | None = None,
    pools: Iterable[Pool] | None = None,
) -> list[ModelError]:
    """The model's lint verdict on holds about to be placed, for the guard rails.

    Linted against every pool and relay (not one gateway's), because a hold
    over a relay is wrong whichever gateway would carry it.
    """
    state = DesiredState(
        gateway="guard",
        revision=0,
        settings=settings or GatewaySettings(),
        pools=tuple(catalogue.pools.values()) if pools is None else tuple(pools),
        relays=catalogue.relays,
        rate_limits=tuple(catalogue.profiles.values()),
        quarantines={k: Quarantine(k, mode) for k, mode in quarantines},
        exemptions={k: Exemption(k) for k in exemptions},
    )
    return [
        e
        for e in lint(state)
        if e.path.startswith(("quarantines", "exemptions"))
        # Walled-garden readiness is per gateway (GatewaySettings.garden_ready), and
        # an exemption outside dynamic space is moot, not dangerous.
        and not e.path.endswith(".mode")
        and "in no dynamic pool" not in e.reason
    ]


def delegation_problem(topology: Topology, prefix: Prefix) -> str | None:
    """Why ``prefix`` cannot be a subscriber's delegated IPv6 prefix, or None."""
    if prefix.version != 6:
        return "expected an IPv6 prefix"
    if prefix.length > 64:
        return f"{prefix} is longer than /64: a subscriber is delegated a /64 or shorter"
    for placed in topology.pools:
        pool = placed.pool
        if pool.subscriber_prefix_len is None or pool.kind is PoolKind.INFRASTRUCTURE:
            continue
        if any(p.contains(prefix) for p in pool.prefixes) and prefix.length < pool.key_length(6):
            return (
                f"{prefix} spans several subscribers of pool {pool.name} "
                f"(it delegates /{pool.subscriber_prefix_len})"
            )
    return None
