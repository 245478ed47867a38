"""The keys of a persisted snapshot as nft text, so a restart commits before it parses.

Restoring a million keys from ``applied.json`` means parsing the JSON,
building the model and rendering it before anything reaches the kernel:
three times the cost of ``nft -f`` of the same keys.  So alongside each
snapshot the agent writes ``applied.nft``: the exact-key elements already
rendered as ``add element`` commands (what ``render_keys`` gives the
kernel), plus the little the rest of the table is rendered from (the
structure and the few prefix keys, as state data).  A restart renders
that small structure, hands libnftables the stored text, and builds the
model afterwards.

What ties the payload to the state, checked before anything is committed:

* the SHA-256 of ``applied.json``'s exact bytes (written by the same save,
  so a payload of any other snapshot, or a changed file, does not match);
* the SHA-256 of its own element text (a damaged payload does not match);
* a journal that adds no change to the snapshot (only empty entries, such
  as a drift repair's; a torn last line is ignored as ``load`` ignores it).

Anything else -- no payload, a mismatch, a journal with changes -- is the
ordinary path: load, render, commit.  Element timeouts are relative, so
keys that expire are stored with their expiry and rendered at restore
time exactly as ``KeyLayout.fill`` does (expired ones left out).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, islice
from typing import Any, TypeVar

from edgectl.agent.keys import EXEMPT, KeyLayout, Kind
from edgectl.agent.transaction import Transaction
from edgectl.model.errors import ModelError
from edgectl.model.policy import DesiredState, Exemption, Quarantine
from edgectl.model.prefix import Prefix
from edgectl.model.serial import (
    exemption_to_data,
    quarantine_to_data,
    state_from_data,
    state_to_data,
)

FORMAT = 1
# Keys rendered at a time: ~20 element commands per million keys and set.
_CHUNK = 50_000


class PayloadMismatch(ValueError):
    """The payload does not belong to the persisted state (or is damaged): render instead."""


@dataclass(frozen=True)
class Payload:
    """A verified payload: what ``Kernel.restore_payload`` commits."""

    # The table's structure and its prefix (non-exact) keys; no exact key.
    structure: DesiredState
    # ``add element`` commands of the exact keys without an expiry.
    static: str
    # Exact keys with an expiry, by set: (element text, expiry).
    timed: Mapping[str, list[tuple[str, datetime]]]
    # The snapshot's journal id: a journal with this id continues it.
    journal: str

    @property
    def revision(self) -> int:
        return self.structure.revision

    def keys_script(self, now: datetime) -> str:
        """Every exact key as ``add element`` commands at ``now`` (expired ones left out)."""
        parts = [self.static]
        for name, entries in self.timed.items():
            elements = []
            for text, expires in entries:
                # KeyLayout.fill's arithmetic, so both paths write the same timeout.
                seconds = math.ceil((expires - now).total_seconds())
                if seconds > 0:
                    elements.append(f"{text} timeout {seconds}s")
            if elements:
                parts.append(_add_elements(name, elements))
        return "".join(parts)


def _add_elements(name: str, elements: Iterable[str]) -> str:
    """One set's ``add element`` command, as a rendered transaction prints it."""
    transaction = Transaction()
    transaction.elements("add", name, elements)
    return str(transaction)


def render(state: DesiredState, snapshot: bytes, journal: str) -> Iterator[str]:
    """The payload of ``state``, in parts to write as they come: ``snapshot`` is the
    bytes of its applied.json, ``journal`` the id that snapshot's journal carries.

    The element commands first, a chunk of keys at a time, so that a million
    keys never stand as a million strings at once (an idle agent's RSS keeps
    the high-water mark of its heap); then one line of JSON, the trailer, with
    what checks and completes them.  The file ends with the store's newline.
    """
    layout = KeyLayout(state.delegated_lengths())
    timed: dict[str, list[list[str]]] = {}
    body = hashlib.sha256()
    structure = state_to_data(_structure_only(state))
    quarantines: list[dict[str, Any]] = []
    exemptions: list[dict[str, Any]] = []
    for part in chain(
        _place(state.quarantines, None, _mode, quarantine_to_data, layout, timed, quarantines),
        _place(state.exemptions, EXEMPT, _exempt, exemption_to_data, layout, timed, exemptions),
    ):
        body.update(part.encode())
        yield part
    structure["quarantines"], structure["exemptions"] = quarantines, exemptions
    trailer = {
        "format": FORMAT,
        "journal": journal,
        "snapshot_sha256": hashlib.sha256(snapshot).hexdigest(),
        "body_sha256": body.hexdigest(),
        "structure": structure,
        "timed": timed,
    }
    yield json.dumps(trailer, separators=(",", ":"))


E = TypeVar("E", Quarantine, Exemption)


def _place(
    entries: Mapping[Prefix, E],
    kind: Kind | None,
    kind_of: Callable[[E], Kind],
    to_data: Callable[[E], dict[str, Any]],
    layout: KeyLayout,
    timed: dict[str, list[list[str]]],
    ranges: list[dict[str, Any]],
) -> Iterator[str]:
    """``entries``, ``_CHUNK`` at a time: exact keys without an expiry as ``add element``
    commands (yielded), those with one into ``timed``, prefix keys' data into ``ranges``.

    ``kind`` None: each entry's own mode, ``kind_of`` (quarantines).
    """
    items = iter(entries.items())
    while chunk := list(islice(items, _CHUNK)):
        plain: list[tuple[Prefix, E]] = []
        for key, entry in chunk:
            if not layout.is_exact(key):
                ranges.append(to_data(entry))
            elif entry.expires is None:
                plain.append((key, entry))
            else:
                name, text, _ = layout.place(key, kind_of(entry), None)
                timed.setdefault(name, []).append([text, entry.expires.isoformat()])
        static: dict[str, list[str]] = {name: [] for name in _exact_names(layout)}
        # No expiry, so ``now`` is never read: the text is the same at any time.
        layout.fill(plain, kind, datetime.min, static, {})
        yield from (_add_elements(name, texts) for name, texts in static.items() if texts)


def _mode(entry: Quarantine) -> Kind:
    return entry.mode


def _exempt(entry: Exemption) -> Kind:
    return EXEMPT


def _exact_names(layout: KeyLayout) -> Iterator[str]:
    for sets in layout.exact_sets().values():
        for _, _, name in sets:
            yield name


def _structure_only(state: DesiredState) -> DesiredState:
    return DesiredState(
        gateway=state.gateway,
        revision=state.revision,
        settings=state.settings,
        pools=state.pools,
        relays=state.relays,
        rate_limits=state.rate_limits,
    )


def read(text: bytes, snapshot: bytes) -> Payload:
    """The payload in ``text`` if it belongs to ``snapshot`` (the bytes of applied.json)."""
    if not text.endswith(b"\n"):  # the store's closing newline
        raise PayloadMismatch("truncated")
    body, newline, last = text[:-1].rpartition(b"\n")
    body += newline  # the last command's own newline
    try:
        trailer = json.loads(last)
    except ValueError as error:
        raise PayloadMismatch(f"unreadable trailer ({error})") from None
    if not isinstance(trailer, dict) or trailer.get("format") != FORMAT:
        raise PayloadMismatch("not a payload of this format")
    if trailer.get("snapshot_sha256") != hashlib.sha256(snapshot).hexdigest():
        raise PayloadMismatch("written for another applied.json")
    if trailer.get("body_sha256") != hashlib.sha256(body).hexdigest():
        raise PayloadMismatch("its element text is damaged")
    try:
        structure = state_from_data(trailer.get("structure"))
        timed = {
            name: [(text, _time(expires)) for text, expires in entries]
            for name, entries in trailer["timed"].items()
        }
    except (ModelError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise PayloadMismatch(f"unreadable trailer ({error})") from None
    journal = trailer.get("journal")
    if not isinstance(journal, str):
        raise PayloadMismatch("no journal id")
    return Payload(structure, body.decode(), timed, journal)


def _time(text: Any) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone")
    return value


def empty_entry(entry: object, revision: int) -> bool:
    """A journal entry that leaves the state at ``revision`` as it was (a drift repair's)."""
    if not isinstance(entry, dict):
        return False
    delta = entry.get("delta")
    if not isinstance(delta, dict) or delta.get("structure") is not None:
        return False
    if delta.get("from_revision") != revision or delta.get("to_revision") != revision:
        return False
    changes = (delta.get("quarantines") or {}, delta.get("exemptions") or {})
    return all(
        isinstance(c, dict) and not c.get("upserts") and not c.get("removals") for c in changes
    )
