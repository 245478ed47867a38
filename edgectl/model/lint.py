"""Refuse policies an operator would regret, naming the offending item.

Construction already checked each value alone; this checks how they
combine.  ``lint`` returns every problem rather than the first, so that one
review round fixes a whole policy file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from edgectl.model.errors import ModelError
from edgectl.model.policy import (
    SUBMISSION_PORTS,
    DesiredState,
    PoolKind,
    QuarantineMode,
)
from edgectl.model.prefix import Prefix, PrefixIndex, first_overlap


def lint(state: DesiredState) -> list[ModelError]:
    return [
        *_ports(state),
        *_pools(state),
        *_relays(state),
        *_subscriber_keys(state),
        *_walled_garden(state),
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
    # Overlapping pools make "which pool is this subscriber in" ambiguous, and
    # nft refuses overlapping elements in the interval map that classifies them.
    overlap = first_overlap(_named_prefixes(state, PoolKind))
    if overlap is not None:
        (first, first_prefix), (second, second_prefix) = overlap
        yield ModelError(second, f"{second_prefix} overlaps {first_prefix} of {first}")


def _relays(state: DesiredState) -> Iterator[ModelError]:
    dynamic = PrefixIndex(_named_prefixes(state, [PoolKind.DYNAMIC]))
    for relay in state.relays:
        for index, prefix in enumerate(relay.prefixes):
            for pool in dynamic.hits(prefix):
                yield ModelError(
                    f"relays[{relay.name}].prefixes[{index}]",
                    f"{prefix} lies in dynamic pool space ({pool}): OP25B would let "
                    "subscribers relay through each other",
                )


def _subscriber_keys(state: DesiredState) -> Iterator[ModelError]:
    protected = PrefixIndex(
        [
            *_named_prefixes(state, [PoolKind.INFRASTRUCTURE]),
            *((f"relays[{r.name}]", p) for r in state.relays for p in r.prefixes),
        ]
    )
    dynamic = PrefixIndex(_named_prefixes(state, [PoolKind.DYNAMIC]))
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
        if not dynamic.overlaps_any(key):
            yield ModelError(
                f"exemptions[{key}]",
                f"{key} is in no dynamic pool, so OP25B does not apply to it",
            )


def _walled_garden(state: DesiredState) -> Iterator[ModelError]:
    settings = state.settings
    if settings.resolvers and settings.portal:
        return
    for key, entry in state.quarantines.items():
        if entry.mode is QuarantineMode.WALLED_GARDEN:
            yield ModelError(
                f"quarantines[{key}].mode",
                "walled-garden needs settings.resolvers and settings.portal; "
                "without them it is the same as block",
            )
            return


def check(state: DesiredState) -> DesiredState:
    """Raise the first problem lint finds, for callers that need one verdict."""
    problems = lint(state)
    if problems:
        raise problems[0]
    return state
