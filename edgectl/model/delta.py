"""What changed between two revisions of one gateway's DesiredState.

Quarantines and exemptions churn all day and travel as per-key upserts and
removals, so a change costs what it touches.  Everything else (settings,
pools, relays, rate-limit profiles) changes rarely and travels whole when
it changes at all; for the kernel such a change is a structural one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from edgectl.model.errors import ModelError
from edgectl.model.keymap import KeyMap
from edgectl.model.policy import (
    DesiredState,
    Exemption,
    GatewaySettings,
    Pool,
    Quarantine,
    RateLimitProfile,
    Relay,
    keyed,
)
from edgectl.model.prefix import Prefix

Entry = TypeVar("Entry", Quarantine, Exemption)


@dataclass(frozen=True, slots=True)
class Structure:
    """The slow-changing part of a DesiredState; changing it rebuilds chains."""

    settings: GatewaySettings
    pools: tuple[Pool, ...]
    relays: tuple[Relay, ...]
    rate_limits: tuple[RateLimitProfile, ...]

    @classmethod
    def of(cls, state: DesiredState) -> Structure:
        return cls(state.settings, state.pools, state.relays, state.rate_limits)


@dataclass(frozen=True, slots=True)
class KeyedChanges(Generic[Entry]):
    """Entries added or changed (``upserts``) and keys that went away (``removals``)."""

    upserts: tuple[Entry, ...] = ()
    removals: tuple[Prefix, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.upserts or self.removals)


@dataclass(frozen=True, slots=True)
class StateDelta:
    """Turns the state at ``from_revision`` into the state at ``to_revision``."""

    gateway: str
    from_revision: int
    to_revision: int
    structure: Structure | None = None
    quarantines: KeyedChanges[Quarantine] = field(default_factory=KeyedChanges)
    exemptions: KeyedChanges[Exemption] = field(default_factory=KeyedChanges)

    @property
    def empty(self) -> bool:
        return self.structure is None and not self.quarantines and not self.exemptions


def _changes(old: Mapping[Prefix, Entry], new: Mapping[Prefix, Entry]) -> KeyedChanges[Entry]:
    upserts = tuple(entry for key, entry in new.items() if old.get(key) != entry)
    removals = tuple(key for key in old if key not in new)
    return KeyedChanges(upserts, removals)


def diff(old: DesiredState, new: DesiredState) -> StateDelta:
    """The delta that turns ``old`` into ``new``."""
    if old.gateway != new.gateway:
        raise ModelError("gateway", f"cannot diff {old.gateway!r} against {new.gateway!r}")
    structure = Structure.of(new)
    return StateDelta(
        gateway=new.gateway,
        from_revision=old.revision,
        to_revision=new.revision,
        structure=None if structure == Structure.of(old) else structure,
        quarantines=_changes(old.quarantines, new.quarantines),
        exemptions=_changes(old.exemptions, new.exemptions),
    )


def _apply(target: KeyMap[Entry], changes: KeyedChanges[Entry], path: str) -> KeyMap[Entry]:
    if not changes:
        return target
    return target.updated(changes.removals, keyed(changes.upserts, path).items())


def patch(state: DesiredState, delta: StateDelta) -> DesiredState:
    """Apply ``delta`` to ``state``; a delta for another revision is refused, not guessed."""
    return patch_chain(state, (delta,))


def patch_chain(state: DesiredState, deltas: Iterable[StateDelta]) -> DesiredState:
    """Apply deltas one after the other, each from where the previous one left off.

    The keyed maps become persistent ``KeyMap``s (once, if they are plain
    mappings): each delta then costs what it touches, never a copy of a
    million keys, and ``state`` itself stays as it was.
    """
    revision = state.revision
    structure = Structure.of(state)
    quarantines = KeyMap.of(state.quarantines)
    exemptions = KeyMap.of(state.exemptions)
    for delta in deltas:
        if delta.gateway != state.gateway:
            raise ModelError("gateway", f"delta for {delta.gateway!r}, state of {state.gateway!r}")
        if delta.from_revision != revision:
            raise ModelError(
                "from_revision",
                f"delta starts at revision {delta.from_revision}, state is at {revision}",
            )
        structure = delta.structure or structure
        quarantines = _apply(quarantines, delta.quarantines, "quarantines")
        exemptions = _apply(exemptions, delta.exemptions, "exemptions")
        revision = delta.to_revision
    return replace(
        state,
        revision=revision,
        settings=structure.settings,
        pools=structure.pools,
        relays=structure.relays,
        rate_limits=structure.rate_limits,
        quarantines=quarantines,
        exemptions=exemptions,
    )


def persistent(state: DesiredState) -> DesiredState:
    """``state`` with its keyed maps as ``KeyMap``s (itself if they are already)."""
    if isinstance(state.quarantines, KeyMap) and isinstance(state.exemptions, KeyMap):
        return state
    return patch_chain(state, ())
