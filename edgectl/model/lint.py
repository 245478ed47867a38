"""Refuse policies an operator would regret, naming the offending item.

Construction already checked each value alone; this checks how they
combine.  ``lint`` returns every problem rather than the first, so that one
review round fixes a whole policy file.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Iterator
from itertools import chain, compress, repeat
from operator import eq, itemgetter

from edgectl.model.errors import ModelError
from edgectl.model.policy import (
    MODE_POLICY,
    SUBMISSION_PORTS,
    DesiredState,
    PoolKind,
)
from edgectl.model.pool_map import PoolMap, duplicates
from edgectl.model.prefix import Prefix, PrefixIndex
from edgectl.model.serial import KeyColumns, StateColumns

_BITS = {4: 32, 6: 128}
_version, _value, _length = itemgetter(0), itemgetter(1), itemgetter(2)


def lint(state: DesiredState) -> list[ModelError]:
    # Built once: at 5,000 pools the map costs ~30 ms, and two checks use it.
    pools = _pool_kinds(state)
    return [
        *_ports(state),
        *_pools(state),
        *_relays(state, pools),
        *_subscriber_keys(state, pools),
        *_walled_garden(state),
        *_garden_destinations(state),
    ]


def _ports(state: DesiredState) -> Iterator[ModelError]:
    settings = state.settings
    for index, port in enumerate(settings.op25b_ports):
        if port in SUBMISSION_PORTS:
            yield ModelError(
                f"settings.op25b_ports[{index}]",
                f"OP25B must never block {port}: subscribers submit mail to their "
                "provider there (RFC 6409, RFC 8314)",
            )
        elif port not in settings.mail_ports:
            yield ModelError(
                f"settings.op25b_ports[{index}]",
                f"port {port} is not one of mail_ports; OP25B only sees mail traffic",
            )


def _named_prefixes(state: DesiredState, kinds: Iterable[PoolKind]) -> list[tuple[str, Prefix]]:
    wanted = set(kinds)
    return [
        (f"pools[{pool.name}]", prefix)
        for pool in state.pools
        if pool.kind in wanted
        for prefix in pool.prefixes
    ]


def _pools(state: DesiredState) -> Iterator[ModelError]:
    profiles = {p.name for p in state.rate_limits}
    for pool in state.pools:
        if pool.rate_limit is not None and pool.rate_limit not in profiles:
            yield ModelError(
                f"pools[{pool.name}].rate_limit", f"no rate-limit profile named {pool.rate_limit!r}"
            )
    # Nested pools are fine (the most specific prefix wins: a static /24
    # carved out of a dynamic /16); the same prefix twice has no winner.
    for first, second, prefix in duplicates(_named_prefixes(state, PoolKind)):
        where = "again" if first == second else f"also in {first}"
        yield ModelError(second, f"{prefix} is listed {where}: which pool is it?")


def _pool_kinds(state: DesiredState) -> PoolMap[tuple[str, PoolKind]]:
    """Address -> (pool name, kind) by longest prefix, as the dataplane classifies."""
    return PoolMap(
        (prefix, (pool.name, pool.kind)) for pool in state.pools for prefix in pool.prefixes
    )


def _relays(state: DesiredState, pools: PoolMap[tuple[str, PoolKind]]) -> Iterator[ModelError]:
    for relay in state.relays:
        for index, prefix in enumerate(relay.prefixes):
            dynamic = [
                f"pools[{n}]" for n, kind in pools.owners(prefix) if kind is PoolKind.DYNAMIC
            ]
            for pool in dynamic:
                yield ModelError(
                    f"relays[{relay.name}].prefixes[{index}]",
                    f"{prefix} lies in dynamic pool space ({pool}): OP25B would let "
                    "subscribers relay through each other",
                )


def _subscriber_keys(
    state: DesiredState, pools: PoolMap[tuple[str, PoolKind]]
) -> Iterator[ModelError]:
    protected = _protected(state)
    if not _keys_clear(_held(state), protected, pools):
        yield from _each_key(state, pools, protected)


def _held(state: DesiredState) -> dict[str, dict[tuple[int, int], list[int]]]:
    """The keys' values by list and shape (``_shapes``), for ``_keys_clear``."""
    return {"quarantines": _shapes(state.quarantines), "exemptions": _shapes(state.exemptions)}


def _protected(state: DesiredState) -> PrefixIndex:
    """What no key may cover: infrastructure pools and relays."""
    return PrefixIndex(
        [
            *_named_prefixes(state, [PoolKind.INFRASTRUCTURE]),
            *((f"relays[{r.name}]", p) for r in state.relays for p in r.prefixes),
        ]
    )


def _each_key(
    state: DesiredState, pools: PoolMap[tuple[str, PoolKind]], protected: PrefixIndex
) -> Iterator[ModelError]:
    """Every problem of every key, in file order."""
    # A million keys on a large gateway: build a path only for a key that fails.
    for label, keys in (("quarantines", state.quarantines), ("exemptions", state.exemptions)):
        for key in keys:
            if key.length == 0:
                yield ModelError(f"{label}[{key}]", f"{key} would hold every subscriber at once")
                continue
            if key.version == 6 and key.length > 64:
                yield ModelError(
                    f"{label}[{key}]",
                    f"{key} is longer than /64: an IPv6 subscriber owns at least a /64 "
                    "and would step around a narrower key",
                )
            hits = protected.hits(key)
            if hits:
                yield ModelError(
                    f"{label}[{key}]", f"{key} covers {hits[0]}, which must never be held"
                )
    for key in state.exemptions:
        if not any(kind is PoolKind.DYNAMIC for _, kind in pools.owners(key)):
            yield ModelError(
                f"exemptions[{key}]",
                f"{key} is in no dynamic pool, so OP25B does not apply to it",
            )


def _shapes(keys: Collection[Prefix]) -> dict[tuple[int, int], list[int]]:
    """The keys' values, sorted, by (IP version, length): a few passes of C calls
    over the keys (no per-key object), one more per shape beyond the first."""
    shapes: dict[tuple[int, int], list[int]] = {}
    for version, same_version in _split(list(keys), _version):
        for length, same_shape in _split(same_version, _length):
            shapes[version, length] = sorted(map(_value, same_shape))
    return shapes


def _split(keys: list[Prefix], field: itemgetter[int]) -> list[tuple[int, list[Prefix]]]:
    """``keys`` grouped by one field (in no particular order of groups)."""
    fields = list(map(field, keys))
    kinds = set(fields)
    if len(kinds) <= 1:
        return [(kind, keys) for kind in kinds]
    return [(kind, list(compress(keys, map(eq, fields, repeat(kind))))) for kind in kinds]


def _any_within(values: list[int], first: int, last: int) -> bool:
    """Whether sorted ``values`` hold one in first..last."""
    return bisect_left(values, first) < bisect_right(values, last)


def _keys_clear(
    held: dict[str, dict[tuple[int, int], list[int]]],
    protected: PrefixIndex,
    pools: PoolMap[tuple[str, PoolKind]],
) -> bool:
    """True when ``_each_key`` would find nothing, decided a shape at a time.

    Per key, its checks cost ~0.6 us, most of lint at 200k keys.  Here the
    keys' values, sorted per (version, length), meet the few protected ranges
    and dynamic pool intervals by bisection.  False means "look key by key"
    (something may be wrong), never that something is.
    """
    for shapes in held.values():
        for (version, length), values in shapes.items():
            if length == 0 or (version == 6 and length > 64):
                return False
            # A key of ``size`` addresses at value v overlaps first..last
            # when first - size < v <= last.
            size = 1 << (_BITS[version] - length)
            for first, last in protected.merged(version):
                if _any_within(values, first - size + 1, last):
                    return False
    dynamic = [
        (version, first, last)
        for version, first, last, (_, kind) in pools.intervals
        if kind is PoolKind.DYNAMIC
    ]
    for (version, length), values in held["exemptions"].items():
        if length != _BITS[version]:
            # Prefix exemptions are few: the exact check, key by key.
            if not all(
                any(kind is PoolKind.DYNAMIC for _, kind in pools.owners(key))
                for key in (Prefix(version, value, length) for value in values)
            ):
                return False
            continue
        # Single addresses: all inside when the dynamic intervals (disjoint)
        # hold as many of them as there are.
        inside = sum(
            bisect_right(values, last) - bisect_left(values, first)
            for v, first, last in dynamic
            if v == version
        )
        if inside != len(values):
            return False
    return True


def exact_clear(columns: StateColumns) -> bool:
    """True when ``lint`` finds nothing in ``columns.state()``; False means "lint the
    built state" (which names every problem), never that there is one.

    For ``edgectl apply -f`` of a state of exact keys: the same checks as
    ``lint``, over the keys' values, no entry built.
    """
    structure = columns.structure
    pools = _pool_kinds(structure)
    problems = chain(
        _ports(structure),
        _pools(structure),
        _relays(structure, pools),
        _garden_destinations(structure),
    )
    if next(problems, None) is not None:
        return False
    held = columns.quarantines
    modes = set(held.fields["mode"])
    if not structure.settings.garden_ready and any(MODE_POLICY[m].needs_garden for m in modes):
        return False
    shapes = {"quarantines": _exact_shapes(held), "exemptions": _exact_shapes(columns.exemptions)}
    return _keys_clear(shapes, _protected(structure), pools)


def _exact_shapes(keys: KeyColumns) -> dict[tuple[int, int], list[int]]:
    """``_shapes`` of the keys: IPv4 values by one unpack, the IPv6 keys' by length."""
    shapes = _shapes(keys.others)
    if keys.v4:
        shapes[4, 32] = sorted(struct.unpack(f">{len(keys.v4)}I", b"".join(keys.v4)))
    return shapes


def _walled_garden(state: DesiredState) -> Iterator[ModelError]:
    """A mode that needs resolvers and a portal, on a gateway without both: once per mode."""
    if state.settings.garden_ready:
        return
    for mode, policy in MODE_POLICY.items():
        if not policy.needs_garden:
            continue
        # One pass of identity checks: lint sees every key of a full state.
        first = next((key for key, q in state.quarantines.items() if q.mode is mode), None)
        if first is not None:
            yield ModelError(
                f"quarantines[{first}].mode",
                f"{mode} needs settings.resolvers and settings.portal; "
                f"without them it is the same as {policy.fallback}",
            )


# The walled garden lets a quarantined subscriber reach DNS and the notice
# portal only: services, a handful of addresses.  A wider destination (at the
# extreme 0.0.0.0/0) silently turns the quarantine into no quarantine at all.
GARDEN_SHORTEST = {4: 16, 6: 48}


def _garden_destinations(state: DesiredState) -> Iterator[ModelError]:
    settings = state.settings
    listed = [
        *(
            (f"settings.{name}[{index}]", name, prefix)
            for name in ("resolvers", "portal")
            for index, prefix in enumerate(getattr(settings, name))
        ),
        # The update-service allowlist opens the garden the same way.
        *(
            (f"settings.garden_allow[{index}].prefix", "update services", d.prefix)
            for index, d in enumerate(settings.garden_allow)
        ),
    ]
    for path, name, prefix in listed:
        shortest = GARDEN_SHORTEST[prefix.version]
        if prefix.length < shortest:
            yield ModelError(
                path,
                f"{prefix} would open the walled garden to far more than a service: "
                f"list the {name} themselves (IPv4 /{GARDEN_SHORTEST[4]} or longer, "
                f"IPv6 /{GARDEN_SHORTEST[6]} or longer)",
            )


def check(state: DesiredState) -> DesiredState:
    """Raise the first problem lint finds, for callers that need one verdict."""
    problems = lint(state)
    if problems:
        raise problems[0]
    return state
