"""Compare the live table with a DesiredState, without listing big sets.

nft 1.0.6 loads every element of a set into its cache before it lists a
chain or even gets one element: 16 s with a million keys.  So:

* structure (chains, rule identities, set definitions, counters) comes
  from raw netlink dumps that carry no elements (kernel_readback);
* small interval sets and maps (pools, relays, prefix quarantines) are
  listed whole through nft, whose cache is filtered to the one set;
* hash sets of subscriber keys are probed key by key with GETSETELEM:
  every key when there are at most ``EXHAUSTIVE_LIMIT``, a random sample
  otherwise.  An element someone *added* cannot be seen this way; the
  ruleset generation says whether anyone committed since our last apply.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from edgectl.agent.apply import Dataplane
from edgectl.agent.kernel_readback import TableLayout
from edgectl.agent.keys import EXEMPT, KeyLayout, needs_full_sync
from edgectl.agent.netlink.constants import NFT_SET_INTERVAL
from edgectl.agent.nft import NftError
from edgectl.agent.persist import Applied
from edgectl.agent.render import Rendered, render_full
from edgectl.agent.table import SPEC
from edgectl.model.delta import diff
from edgectl.model.policy import DesiredState

EXHAUSTIVE_LIMIT = 20_000
SAMPLE_SIZE = 4_096


@dataclass
class Plan:
    table_present: bool
    generation: int | None
    # What in the kernel differs from the desired state (needs a full sync).
    drift: list[str] = field(default_factory=list)
    # Desired vs last applied, in words ("+2 quarantines").
    changes: list[str] = field(default_factory=list)
    # What was verified and how, so nobody mistakes a sample for a proof.
    notes: list[str] = field(default_factory=list)
    action: str = "none"  # "none", "delta" or "full"

    @property
    def in_sync(self) -> bool:
        return self.action == "none"


def _structure_drift(layout: TableLayout, expected: Rendered) -> list[str]:
    chains = expected.chain_tags
    sets = set(expected.set_elements)
    counters = set(expected.counter_names)
    drift = []
    for name, tags in chains.items():
        live = layout.chains.get(name)
        if live is None:
            drift.append(f"chain {name}: missing")
        elif [rule.comment for rule in live.rules] != tags:
            drift.append(f"chain {name}: rules differ ({len(live.rules)} live, {len(tags)} wanted)")
    drift.extend(f"chain {name}: not ours" for name in sorted(set(layout.chains) - set(chains)))
    drift.extend(f"set {name}: missing" for name in sorted(sets - set(layout.sets)))
    drift.extend(f"set {name}: not ours" for name in sorted(set(layout.sets) - sets))
    drift.extend(f"counter {name}: missing" for name in sorted(counters - set(layout.counters)))
    return drift


def _element_text(element: Any) -> str:
    """nft JSON element -> 'key' or 'key : jump target', timeouts dropped."""
    data = None
    if isinstance(element, list):  # map element: [key, verdict]
        element, data = element
    if isinstance(element, dict) and "elem" in element:
        element = element["elem"]["val"]
    key = _key_text(element)
    if isinstance(data, dict) and data:
        verb, target = next(iter(data.items()))
        return f"{key} : {verb} {target['target']}"
    return key


def _key_text(key: Any) -> str:
    """A key as render writes it: a prefix as addr/len, a concatenation (the
    garden allowlist's address . port) as its parts joined by " . "."""
    if isinstance(key, dict) and "prefix" in key:
        return f"{key['prefix']['addr']}/{key['prefix']['len']}"
    if isinstance(key, dict) and "concat" in key:
        return " . ".join(_key_text(part) for part in key["concat"])
    return str(key)


def _without_timeout(element: str) -> str:
    key, colon, verdict = element.partition(" : ")
    return f"{key.split(' timeout ')[0]}{colon}{verdict}"


def _interval_drift(dataplane: Dataplane, expected: Rendered, layout: TableLayout) -> list[str]:
    drift = []
    for name, info in sorted(layout.sets.items()):
        if not info.flags & NFT_SET_INTERVAL:
            continue
        kind = "map" if info.data_type is not None else "set"
        try:
            listed = dataplane.list_set(kind, name)
        except NftError as error:
            drift.append(f"{kind} {name}: cannot list ({error})")
            continue
        live = {
            _element_text(element)
            for item in listed
            for element in item.get(kind, {}).get("elem", [])
        }
        wanted = {_without_timeout(e) for e in expected.set_elements.get(name, [])}
        drift.extend(f"{kind} {name}: missing {e}" for e in sorted(wanted - live))
        drift.extend(f"{kind} {name}: unexpected {e}" for e in sorted(live - wanted))
    return drift


def _only_interval_keys(state: DesiredState) -> DesiredState:
    """Drop exact-key entries, so rendering for comparison stays cheap at 1M keys."""
    keys = KeyLayout(state.delegated_lengths())
    return replace(
        state,
        quarantines={k: q for k, q in state.quarantines.items() if not keys.is_exact(k)},
        exemptions={k: e for k, e in state.exemptions.items() if not keys.is_exact(k)},
    )


def _key_bytes(element: str) -> bytes:
    family = socket.AF_INET6 if ":" in element else socket.AF_INET
    return socket.inet_pton(family, element)


def _missing_keys(
    dataplane: Dataplane, state: DesiredState, now: datetime
) -> tuple[list[str], list[str]]:
    place = KeyLayout(state.delegated_lengths()).place
    by_set: dict[str, list[str]] = {}
    for key, q in state.quarantines.items():
        if q.expires is None or q.expires > now:
            name, element, exact = place(key, q.mode, None)
            if exact:
                by_set.setdefault(name, []).append(element)
    for key, e in state.exemptions.items():
        if e.expires is None or e.expires > now:
            name, element, exact = place(key, EXEMPT, None)
            if exact:
                by_set.setdefault(name, []).append(element)
    drift: list[str] = []
    notes: list[str] = []
    for name, elements in sorted(by_set.items()):
        if len(elements) > EXHAUSTIVE_LIMIT:
            checked = random.sample(elements, SAMPLE_SIZE)
            notes.append(f"set {name}: probed {SAMPLE_SIZE} sampled keys of {len(elements)}")
        else:
            checked = elements
            notes.append(f"set {name}: probed all {len(elements)} keys")
        by_bytes = {_key_bytes(e): e for e in checked}
        missing = dataplane.missing_elements(name, by_bytes)
        drift.extend(f"set {name}: missing {by_bytes[key]}" for key in missing)
    return drift, notes


def make_plan(
    desired: DesiredState,
    applied: Applied | None,
    dataplane: Dataplane,
    now: datetime | None = None,
) -> Plan:
    now = now or datetime.now(UTC)
    layout = dataplane.read_table()
    if layout is None:
        plan = Plan(False, dataplane.generation(), action="full")
        if applied is None:
            # A first apply creates the table: a change, not a repair.
            plan.changes.append(f"create table {SPEC}")
        else:
            plan.drift.append(f"table {SPEC}: missing")
        return plan
    plan = Plan(True, layout.generation)
    # Drift is the kernel against what we last applied; the desired state
    # against the applied one is a change, not drift.  Without a record,
    # the desired state is all there is to compare with.
    reference = applied.state if applied is not None else desired
    expected = render_full(_only_interval_keys(reference), now)
    structural = _structure_drift(layout, expected)
    plan.drift.extend(structural)
    if not structural:
        plan.drift.extend(_interval_drift(dataplane, expected, layout))
        missing, notes = _missing_keys(dataplane, reference, now)
        plan.drift.extend(missing)
        plan.notes.extend(notes)
    if applied is None:
        plan.notes.append("no record of a previous apply on this host")
        plan.changes.append("resync: no record of what this host holds")
        plan.action = "full"
        return plan
    if applied.generation == layout.generation:
        plan.notes.append(
            f"nobody has committed to the ruleset since our apply (gen {layout.generation})"
        )
    else:
        plan.notes.append(
            f"the ruleset changed since our apply (gen {applied.generation} -> "
            f"{layout.generation}); elements added by hand cannot be seen without listing"
        )
    if applied.state.gateway != desired.gateway:
        plan.changes.append(f"gateway {applied.state.gateway!r} -> {desired.gateway!r}")
        plan.action = "full"
        return plan
    delta = diff(applied.state, desired)
    plan.changes.extend(_describe(delta))
    if plan.drift or needs_full_sync(applied.state, delta):
        plan.action = "full"
    elif delta.quarantines or delta.exemptions:
        plan.action = "delta"
    return plan


def _describe(delta: Any) -> list[str]:
    lines = []
    if delta.structure is not None:
        lines.append("structure (settings, pools, relays or rate limits) changed")
    for label, changes in (("quarantine", delta.quarantines), ("exemption", delta.exemptions)):
        if changes.upserts:
            lines.append(f"{len(changes.upserts)} {label}(s) added or changed")
        if changes.removals:
            lines.append(f"{len(changes.removals)} {label}(s) removed")
    return lines
