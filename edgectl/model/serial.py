"""DesiredState to and from plain data (JSON, or a TOML policy file).

One schema serves the policy file an operator writes, the state an agent
persists and the document a controller serves.  Unknown fields are errors:
a misspelt ``op25b_shadw = true`` must not silently enforce.
"""

from __future__ import annotations

import gc
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property, partial
from itertools import compress, repeat
from operator import attrgetter, contains, is_, is_not, itemgetter, not_, or_
from typing import Any, TypeVar

from edgectl.model.delta import KeyedChanges, StateDelta, Structure
from edgectl.model.errors import ModelError
from edgectl.model.policy import (
    BlockAction,
    DesiredState,
    Exemption,
    GardenDestination,
    GatewaySettings,
    Hook,
    Pool,
    PoolKind,
    Quarantine,
    QuarantineMode,
    RateLimitProfile,
    Relay,
    check_text,
    entries_unchecked,
    keyed,
    quarantine_unchecked,
)
from edgectl.model.prefix import Prefix

SCHEMA_VERSION = 1

T = TypeVar("T")


@contextmanager
def _bulk() -> Iterator[None]:
    """The cyclic collector paused while a state's entries are built or written.

    A million small objects (entries, prefixes, dicts) trigger it every 700
    allocations and its older generations ever more often, each pass walking
    everything built so far: 20-35 % of loading 200,000 keys, measured.  None
    of them can form a cycle; reference counting frees them as before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fields(data: object, path: str, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ModelError(path, f"expected a table/object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ModelError(
            f"{path}.{unknown[0]}" if path else unknown[0],
            f"unknown field (known: {', '.join(sorted(allowed))})",
        )
    missing = sorted(required - set(data))
    if missing:
        raise ModelError(f"{path}.{missing[0]}" if path else missing[0], "field is required")
    return data


def _list(data: object, path: str) -> list[Any]:
    if not isinstance(data, list):
        raise ModelError(path, f"expected a list, got {type(data).__name__}")
    return data


def _each(data: object, path: str, build: Callable[[Any, str], T]) -> tuple[T, ...]:
    return tuple(build(item, f"{path}[{index}]") for index, item in enumerate(_list(data, path)))


def _prefixes(data: object, path: str) -> tuple[Prefix, ...]:
    # A pool lists hundreds of prefixes: all at once, or one by one (which
    # names the one at fault) when the bulk parse doubts any.
    parsed = Prefix.parse_many(data) if isinstance(data, list) else None
    if parsed is not None:
        return tuple(parsed)
    return _each(data, path, lambda item, where: Prefix.parse(item, path=where))


def _enum(enum: type[Any], value: object, path: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ModelError(
            path, f"{value!r} is not one of {', '.join(str(m.value) for m in enum)}"
        ) from None


def parse_time(value: object, path: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ModelError(path, f"{value!r} is not an ISO 8601 time") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ModelError(path, "expected a time with a timezone, e.g. 2026-12-01T00:00:00Z")
    return value


def _built(path: str, build: Callable[[], T]) -> T:
    """Run a constructor, re-rooting its field errors under ``path``."""
    try:
        return build()
    except ModelError as error:
        raise error.under(path) from None


_SETTINGS_FIELDS = {
    "hooks",
    "block_action",
    "mail_ports",
    "op25b_ports",
    "log_group",
    "log_per_second",
    "resolvers",
    "portal",
    "meter_size",
    "track_non_mail",
    "steer_http_4",
    "steer_http_6",
    "steer_http_port",
    "garden_allow",
}


def _garden_destination(data: object, path: str) -> GardenDestination:
    fields = dict(_fields(data, path, {"prefix", "ports"}, {"prefix"}))
    fields["prefix"] = Prefix.parse(fields["prefix"], path=f"{path}.prefix")
    if "ports" in fields:
        fields["ports"] = tuple(_list(fields["ports"], f"{path}.ports"))
    return _built(path, lambda: GardenDestination(**fields))


def settings_from_data(data: object, path: str = "settings") -> GatewaySettings:
    fields = dict(_fields(data, path, _SETTINGS_FIELDS, set()))
    if "hooks" in fields:
        fields["hooks"] = _each(fields["hooks"], f"{path}.hooks", lambda v, p: _enum(Hook, v, p))
    if "block_action" in fields:
        fields["block_action"] = _enum(BlockAction, fields["block_action"], f"{path}.block_action")
    for name in ("mail_ports", "op25b_ports"):
        if name in fields:
            fields[name] = tuple(_list(fields[name], f"{path}.{name}"))
    for name in ("resolvers", "portal"):
        if name in fields:
            fields[name] = _prefixes(fields[name], f"{path}.{name}")
    for name in ("steer_http_4", "steer_http_6"):
        if fields.get(name) is not None:
            fields[name] = Prefix.parse(fields[name], path=f"{path}.{name}")
    if "garden_allow" in fields:
        fields["garden_allow"] = _each(
            fields["garden_allow"], f"{path}.garden_allow", _garden_destination
        )
    return _built(path, lambda: GatewaySettings(**fields))


def pool_from_data(data: object, path: str) -> Pool:
    fields = _fields(
        data,
        path,
        {"name", "kind", "prefixes", "subscriber_prefix_len", "rate_limit", "op25b_shadow"},
        {"name", "kind", "prefixes"},
    )
    return _built(
        path,
        lambda: Pool(
            name=fields["name"],
            kind=_enum(PoolKind, fields["kind"], "kind"),
            prefixes=_prefixes(fields["prefixes"], "prefixes"),
            subscriber_prefix_len=fields.get("subscriber_prefix_len"),
            rate_limit=fields.get("rate_limit"),
            op25b_shadow=fields.get("op25b_shadow", False),
        ),
    )


def relay_from_data(data: object, path: str) -> Relay:
    fields = _fields(data, path, {"name", "prefixes"}, {"name", "prefixes"})
    return _built(
        path, lambda: Relay(name=fields["name"], prefixes=_prefixes(fields["prefixes"], "prefixes"))
    )


def profile_from_data(data: object, path: str) -> RateLimitProfile:
    fields = _fields(
        data,
        path,
        {"name", "new_per_minute", "burst", "concurrent", "per_destination", "shadow"},
        {"name", "new_per_minute", "burst"},
    )
    return _built(path, lambda: RateLimitProfile(**fields))


_EXEMPTION_FIELDS = {"key", "account", "ticket", "expires"}


def exemption_from_data(data: object, path: str = "") -> Exemption:
    # A fifth of a million restored keys: as quarantine_from_data, the field
    # check only for an entry that is not a plain dict of known fields, and
    # the constructor called directly (its own checks stay: they are cheap).
    if not isinstance(data, dict) or not data.keys() <= _EXEMPTION_FIELDS or "key" not in data:
        data = _fields(data, path, _EXEMPTION_FIELDS, {"key"})
    try:
        expires = data.get("expires")
        if expires is not None:
            expires = parse_time(expires, "expires")
        return Exemption(
            Prefix.parse(data["key"], path="key"), data.get("account"), data.get("ticket"), expires
        )
    except ModelError as error:
        raise error.under(path) from None


_QUARANTINE_FIELDS = {"key", "mode", "account", "expires"}
_MODES = {mode.value: mode for mode in QuarantineMode}
# Enum's .value is a property lookup; a dict probe is a third of it.
_MODE_TEXT = {mode: mode.value for mode in QuarantineMode}


def quarantine_from_data(data: object, path: str = "") -> Quarantine:
    # The hot path of restoring a million keys: one dict probe a field, the
    # general field check only when the entry is not a plain dict, and the
    # entry built without re-checking what was just checked here.
    if not isinstance(data, dict) or not data.keys() <= _QUARANTINE_FIELDS or "key" not in data:
        data = _fields(data, path, _QUARANTINE_FIELDS, {"key", "mode"})
    mode_text = data.get("mode")
    mode = _MODES.get(mode_text) if isinstance(mode_text, str) else None
    if mode is None:
        raise ModelError(f"{path}.mode" if path else "mode", f"must be one of {', '.join(_MODES)}")
    try:
        account = data.get("account")
        if account is not None:
            check_text(account, "account")
        expires = data.get("expires")
        if expires is not None:
            expires = parse_time(expires, "expires")
        return quarantine_unchecked(Prefix.parse(data["key"], path="key"), mode, account, expires)
    except ModelError as error:
        raise error.under(path) from None


def _entries(data: object, path: str, build: Callable[[Any], T]) -> tuple[T, ...]:
    """``_each`` for the long lists (a million keys): a path is made only for the
    entry that fails, not a string per entry."""
    items = _list(data, path)
    try:
        return tuple(map(build, items))
    except ModelError:
        for index, item in enumerate(items):
            try:
                build(item)
            except ModelError as error:
                raise error.under(f"{path}[{index}]") from None
        raise


# -- whole lists at once ----------------------------------------------------------
#
# A policy file or snapshot of 200,000 keys spends most of its load building
# entries one Python call at a time (~1.6 us a quarantine, ~3.4 us an
# exemption).  The loader below takes a whole list in a few passes of C
# calls (map over itemgetter, inet_pton) and returns None at the first
# doubt - an entry that is not a plain dict, a field that does not check, a
# key given twice - so that the per-entry builders run instead and name the
# entry and field at fault.  It accepts nothing those refuse.  Its columns
# serve every bulk reader: the model (``state_from_data``), a cold start's
# snapshot and ``edgectl apply -f`` (``state_columns``/``exact_columns``),
# which write the kernel from them before any entry is built.

_get_key = itemgetter("key")
_get_mode = itemgetter("mode")
_pton4 = partial(socket.inet_pton, socket.AF_INET)
_new_tuple = tuple.__new__
_BULK_ERRORS = (ModelError, KeyError, TypeError, ValueError, OSError, struct.error)


def _column(items: list[dict[str, Any]], name: str) -> list[Any]:
    """One optional field of every entry (None where absent)."""
    return list(map(dict.get, items, repeat(name)))


def _checked_texts(values: list[Any], name: str) -> list[Any]:
    if values.count(None) != len(values):
        for value in values:
            check_text(value, name)
    return values


def _times(values: list[Any], name: str) -> list[Any]:
    """``values`` (a fresh column) with each time given parsed, in place."""
    if values.count(None) == len(values):
        return values  # nothing expires (most states): no scan for the times
    given = list(map(is_not, values, repeat(None)))
    texts = list(compress(values, given))
    if set(map(type, texts)) == {str}:
        # ISO texts (JSON): parsed in one C pass; a bad one raises ValueError
        # (the bulk path's "doubt"), a naive one goes the per-value way below.
        times = list(map(datetime.fromisoformat, texts))
        if not any(map(is_, map(_tzinfo, times), repeat(None))):
            deque(map(values.__setitem__, compress(range(len(values)), given), times), maxlen=0)
            return values
    for index in compress(range(len(values)), given):
        values[index] = parse_time(values[index], name)
    return values


_tzinfo = attrgetter("tzinfo")


def _plain_dicts(items: list[Any], allowed: set[str]) -> bool:
    # Every field name at once (one union of all the entries' keys): a C
    # pass, where a check an entry is a Python-level call each.
    return set(map(type, items)) <= {dict} and set().union(*items) <= allowed


# A list's entries as checked columns, one per field (the entry classes' slots).
Columns = dict[str, Sequence[Any]]

Entry = TypeVar("Entry", Quarantine, Exemption)


@dataclass(frozen=True)
class KeyColumns:
    """One list's entries (quarantines or exemptions) checked whole, as columns in
    the document's order, no entry object built.

    The keys come in two columns: the bare dotted quads (nearly all of a
    million), packed as inet_pton gave them - what the kernel's elements
    are made of - and every other key (IPv6 keys, IPv4 prefixes) as a
    Prefix.  The Prefix of every key (``keys``) is made only when the model
    is built.
    """

    # Which entries' keys are bare dotted quads; None when all of them are.
    plain: list[bool] | None
    v4: list[bytes]  # those keys, 4 bytes each, in order
    others: list[Prefix]  # every other key, in order
    # The entry class's other fields (``mode``, ``account``, ``expires``, ...).
    fields: Columns

    def __len__(self) -> int:
        return len(self.v4) + len(self.others)

    @cached_property
    def keys(self) -> list[Prefix]:
        """Every key as a Prefix, in order: the dotted quads by one unpack."""
        values = struct.unpack(f">{len(self.v4)}I", b"".join(self.v4))
        hosts = list(map(_new_tuple, repeat(Prefix), zip(repeat(4), values, repeat(32))))
        if self.plain is None:
            return hosts
        keys: list[Prefix] = [*self.others, *hosts]  # the right length; placed below
        deque(map(keys.__setitem__, compress(range(len(self)), self.plain), hosts), maxlen=0)
        others = compress(range(len(self)), map(not_, self.plain))
        deque(map(keys.__setitem__, others, self.others), maxlen=0)
        return keys

    def split(self, name: str) -> tuple[list[Any], list[Any]]:
        """One field's column as (the dotted quads' values, the other keys' values)."""
        values = self.fields[name]
        if self.plain is None:
            return list(values), []
        return list(compress(values, self.plain)), list(compress(values, map(not_, self.plain)))

    def entries(self, cls: type[Entry]) -> dict[Prefix, Entry]:
        """The entries by key (no key is given twice: ``unique`` or the caller checked)."""
        keys = self.keys
        with _bulk():
            return dict(
                zip(keys, entries_unchecked(cls, {"key": keys, **self.fields}), strict=True)
            )

    def unique(self) -> bool:
        """No key given twice (an IPv4 key written ``a.b.c.d/32`` is the address's twin)."""
        if len(set(self.v4)) != len(self.v4) or len(set(self.others)) != len(self.others):
            return False
        # key[::2]: (version, length); an IPv4 /32 is a dotted quad's twin.
        hosts = [key.value.to_bytes(4, "big") for key in self.others if key[::2] == (4, 32)]
        return not hosts or set(self.v4).isdisjoint(hosts)

    def subset(self, cls: type[Entry], keep: Callable[[int, int], bool]) -> dict[Prefix, Entry]:
        """The entries whose key's (version, length) ``keep`` takes: for the few
        prefix keys of a million, scanned only when some shape is kept."""
        shapes = set(
            zip(map(itemgetter(0), self.others), map(itemgetter(2), self.others), strict=True)
        )
        if self.v4:
            shapes.add((4, 32))
        if not any(keep(version, length) for version, length in shapes):
            return {}
        positions: Iterable[int]
        if self.v4 and keep(4, 32):
            keys, positions = self.keys, range(len(self))
        else:  # the dotted quads left as they are: only the other keys looked at
            keys = self.others
            positions = (
                [] if self.plain is None else compress(range(len(self)), map(not_, self.plain))
            )
        pairs = zip(positions, keys, strict=True)
        chosen = [(index, key) for index, key in pairs if keep(key[0], key[2])]
        picked = {"key": [key for _, key in chosen]}
        for name, values in self.fields.items():
            picked[name] = [values[index] for index, _ in chosen]
        return dict(zip(picked["key"], entries_unchecked(cls, picked), strict=True))


def _key_columns(items: list[Any], allowed: set[str], texts: Sequence[str]) -> KeyColumns | None:
    """``items`` checked whole as ``quarantine_from_data``/``exemption_from_data``
    check each (a ``mode`` when ``allowed`` has one, ``texts`` by ``check_text``,
    timezone-aware times); None at any doubt.  Keys given twice are not
    looked for here (``KeyColumns.unique``)."""
    try:
        if not _plain_dicts(items, allowed):
            return None
        fields: Columns = {}
        if "mode" in allowed:
            fields["mode"] = list(map(_MODES.__getitem__, map(_get_mode, items)))
        for name in texts:
            fields[name] = _checked_texts(_column(items, name), name)
        fields["expires"] = _times(_column(items, "expires"), "expires")
        keys = list(map(_get_key, items))
        special = list(map(or_, map(contains, keys, repeat("/")), map(contains, keys, repeat(":"))))
        if not any(special):
            return KeyColumns(None, list(map(_pton4, keys)), [], fields)
        plain = list(map(not_, special))
        v4 = list(map(_pton4, compress(keys, plain)))
        texts = list(compress(keys, special))
        others = Prefix.parse_many(texts)
        if others is None:  # a mix of forms, or one at fault: each its own way
            others = list(map(Prefix.parse, texts))
        return KeyColumns(plain, v4, others, fields)
    except _BULK_ERRORS:
        return None


def _quarantine_columns(items: list[Any]) -> KeyColumns | None:
    return _key_columns(items, _QUARANTINE_FIELDS, ("account",))


def _exemption_columns(items: list[Any]) -> KeyColumns | None:
    # Checked as Exemption.__post_init__ checks: texts by _checked_texts,
    # times by parse_time (timezone-aware).
    return _key_columns(items, _EXEMPTION_FIELDS, ("account", "ticket"))


def _bulk_quarantines(items: list[Any]) -> dict[Prefix, Quarantine] | None:
    columns = _quarantine_columns(items)
    return None if columns is None else _keyed(Quarantine, columns)


def _bulk_exemptions(items: list[Any]) -> dict[Prefix, Exemption] | None:
    columns = _exemption_columns(items)
    return None if columns is None else _keyed(Exemption, columns)


def _keyed(cls: type[Entry], columns: KeyColumns) -> dict[Prefix, Entry] | None:
    """The entries by key, or None when two share a key (the per-entry loader names it)."""
    built = columns.entries(cls)
    return built if len(built) == len(columns) else None


def _keyed_entries(
    data: object,
    path: str,
    bulk: Callable[[list[Any]], dict[Prefix, Entry] | None],
    build: Callable[[Any], Entry],
) -> dict[Prefix, Entry]:
    """A long list of entries by key: whole, or entry by entry when ``bulk`` doubts it
    (which then names the first bad entry and field, or the key given twice)."""
    items = _list(data, path)
    built = bulk(items)
    if built is not None:
        return built
    return keyed(_entries(items, path, build), path)


_STATE_FIELDS = {
    "schema",
    "gateway",
    "revision",
    "settings",
    "pools",
    "relays",
    "rate_limits",
    "exemptions",
    "quarantines",
}


def _state_fields(data: object) -> Mapping[str, Any]:
    fields = _fields(data, "", _STATE_FIELDS, {"gateway"})
    schema = fields.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ModelError(
            "schema", f"schema {schema!r} is not {SCHEMA_VERSION}, the one this edgectl reads"
        )
    return fields


def _state(
    fields: Mapping[str, Any],
    quarantines: Mapping[Prefix, Quarantine],
    exemptions: Mapping[Prefix, Exemption],
) -> DesiredState:
    return DesiredState(
        gateway=fields["gateway"],
        revision=fields.get("revision", 0),
        settings=settings_from_data(fields.get("settings", {})),
        pools=_each(fields.get("pools", []), "pools", pool_from_data),
        relays=_each(fields.get("relays", []), "relays", relay_from_data),
        rate_limits=_each(fields.get("rate_limits", []), "rate_limits", profile_from_data),
        exemptions=exemptions,
        quarantines=quarantines,
    )


def state_from_data(data: object) -> DesiredState:
    """Build and validate a DesiredState; a ModelError names the first bad field."""
    fields = _state_fields(data)
    with _bulk():
        quarantines = _keyed_entries(
            fields.get("quarantines", []), "quarantines", _bulk_quarantines, quarantine_from_data
        )
        exemptions = _keyed_entries(
            fields.get("exemptions", []), "exemptions", _bulk_exemptions, exemption_from_data
        )
    return _state(fields, quarantines, exemptions)


@dataclass(frozen=True)
class StateColumns:
    """A state document checked whole, its entries still columns (no entry object).

    What a cold start and ``edgectl apply -f`` need to write the kernel
    before building 200k entries (edgectl.agent.kernel_write.pack_columns),
    and what lint checks an all-exact policy by (``lint.exact_clear``).
    ``state()`` then builds exactly the DesiredState ``state_from_data``
    builds from the same document.
    """

    # Everything but the entries (its quarantines and exemptions are empty).
    structure: DesiredState
    quarantines: KeyColumns
    exemptions: KeyColumns

    def state(self) -> DesiredState:
        # state_columns made sure no key is given twice.
        return replace(
            self.structure,
            quarantines=self.quarantines.entries(Quarantine),
            exemptions=self.exemptions.entries(Exemption),
        )

    def subset(self, keep: Callable[[int, int], bool]) -> DesiredState:
        """The structure with the entries whose key's (version, length) ``keep`` takes."""
        return replace(
            self.structure,
            quarantines=self.quarantines.subset(Quarantine, keep),
            exemptions=self.exemptions.subset(Exemption, keep),
        )


def state_columns(data: object) -> StateColumns | None:
    """``data`` checked as ``state_from_data`` checks it, its entries left as columns.

    ModelError for what ``state_from_data`` refuses outside the entries; None
    where the bulk checks of the entries doubt anything, a key given twice
    included: ``state_from_data`` then names the entry and field at fault.
    """
    fields = _state_fields(data)
    with _bulk():
        quarantines = _quarantine_columns(_list(fields.get("quarantines", []), "quarantines"))
        exemptions = _exemption_columns(_list(fields.get("exemptions", []), "exemptions"))
        if quarantines is None or exemptions is None:
            return None
        if not (quarantines.unique() and exemptions.unique()):
            return None
    return StateColumns(_state(fields, {}, {}), quarantines, exemptions)


def exact_columns(data: object) -> StateColumns | None:
    """``state_columns(data)`` when every key is exact (a single IPv4 address, or
    an IPv6 key of a delegated length: one hash-set element each); None for
    any other document or any doubt - a bad field anywhere included, so that
    ``state_from_data`` names it.

    What ``edgectl apply -f`` onto no table takes (``lint.exact_clear``
    checks exactly these).
    """
    try:
        columns = state_columns(data)
    except _BULK_ERRORS:
        return None
    if columns is None:
        return None
    lengths = columns.structure.delegated_lengths()
    others = (*columns.quarantines.others, *columns.exemptions.others)
    if any(key[0] != 6 or key[2] not in lengths for key in others):
        return None  # a range: an interval-map element, rendered with the model
    return columns


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in data.items() if value is not None}


def settings_to_data(settings: GatewaySettings) -> dict[str, Any]:
    return _drop_none(
        {
            "hooks": [h.value for h in settings.hooks],
            "block_action": settings.block_action.value,
            "mail_ports": list(settings.mail_ports),
            "op25b_ports": list(settings.op25b_ports),
            "log_group": settings.log_group,
            "log_per_second": settings.log_per_second,
            "resolvers": [str(p) for p in settings.resolvers],
            "portal": [str(p) for p in settings.portal],
            "meter_size": settings.meter_size,
            "track_non_mail": settings.track_non_mail,
            "steer_http_4": None if settings.steer_http_4 is None else str(settings.steer_http_4),
            "steer_http_6": None if settings.steer_http_6 is None else str(settings.steer_http_6),
            # Defaults left out: documents written before these fields existed
            # stay byte-identical (stored structure, golden files).
            "steer_http_port": None if settings.steer_http_port == 80 else settings.steer_http_port,
            "garden_allow": [
                {"prefix": str(d.prefix), "ports": list(d.ports)} for d in settings.garden_allow
            ]
            or None,
        }
    )


def pool_to_data(pool: Pool) -> dict[str, Any]:
    return _drop_none(
        {
            "name": pool.name,
            "kind": pool.kind.value,
            "prefixes": [str(p) for p in pool.prefixes],
            "subscriber_prefix_len": pool.subscriber_prefix_len,
            "rate_limit": pool.rate_limit,
            "op25b_shadow": pool.op25b_shadow or None,
        }
    )


def profile_to_data(profile: RateLimitProfile) -> dict[str, Any]:
    return _drop_none(
        {
            "name": profile.name,
            "new_per_minute": profile.new_per_minute,
            "burst": profile.burst,
            "concurrent": profile.concurrent,
            "per_destination": profile.per_destination,
            "shadow": profile.shadow or None,
        }
    )


def relay_to_data(relay: Relay) -> dict[str, Any]:
    return {"name": relay.name, "prefixes": [str(p) for p in relay.prefixes]}


# The per-key writers below run a million times for one state file or
# snapshot: fields are added when present rather than dropped when None, in
# the same order (the documents stay byte-identical).


def exemption_to_data(entry: Exemption) -> dict[str, Any]:
    data: dict[str, Any] = {"key": str(entry.key)}
    if entry.account is not None:
        data["account"] = entry.account
    if entry.ticket is not None:
        data["ticket"] = entry.ticket
    if entry.expires is not None:
        data["expires"] = entry.expires.isoformat()
    return data


def quarantine_to_data(entry: Quarantine) -> dict[str, Any]:
    data: dict[str, Any] = {"key": str(entry.key), "mode": _MODE_TEXT[entry.mode]}
    if entry.account is not None:
        data["account"] = entry.account
    if entry.expires is not None:
        data["expires"] = entry.expires.isoformat()
    return data


def state_to_data(state: DesiredState) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "gateway": state.gateway,
        "revision": state.revision,
        "settings": settings_to_data(state.settings),
        "pools": [pool_to_data(p) for p in state.pools],
        "relays": [
            {"name": r.name, "prefixes": [str(p) for p in r.prefixes]} for r in state.relays
        ],
        "rate_limits": [profile_to_data(p) for p in state.rate_limits],
        **_entries_to_data(state),
    }


def _entries_to_data(state: DesiredState) -> dict[str, Any]:
    with _bulk():
        return {
            "exemptions": [exemption_to_data(e) for e in state.exemptions.values()],
            "quarantines": [quarantine_to_data(q) for q in state.quarantines.values()],
        }


def _structure_to_data(structure: Structure) -> dict[str, Any]:
    return {
        "settings": settings_to_data(structure.settings),
        "pools": [pool_to_data(p) for p in structure.pools],
        "relays": [relay_to_data(r) for r in structure.relays],
        "rate_limits": [profile_to_data(p) for p in structure.rate_limits],
    }


def delta_to_data(delta: StateDelta) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "gateway": delta.gateway,
        "from_revision": delta.from_revision,
        "to_revision": delta.to_revision,
        "structure": None if delta.structure is None else _structure_to_data(delta.structure),
        "quarantines": {
            "upserts": [quarantine_to_data(q) for q in delta.quarantines.upserts],
            "removals": [str(key) for key in delta.quarantines.removals],
        },
        "exemptions": {
            "upserts": [exemption_to_data(e) for e in delta.exemptions.upserts],
            "removals": [str(key) for key in delta.exemptions.removals],
        },
    }


def _structure_from_data(data: object, path: str) -> Structure:
    fields = _fields(data, path, {"settings", "pools", "relays", "rate_limits"}, set())
    return Structure(
        settings=settings_from_data(fields.get("settings", {}), f"{path}.settings"),
        pools=_each(fields.get("pools", []), f"{path}.pools", pool_from_data),
        relays=_each(fields.get("relays", []), f"{path}.relays", relay_from_data),
        rate_limits=_each(fields.get("rate_limits", []), f"{path}.rate_limits", profile_from_data),
    )


def _keyed_changes(
    data: object, path: str, build: Callable[[Any, str], T]
) -> tuple[tuple[T, ...], tuple[Prefix, ...]]:
    fields = _fields(data, path, {"upserts", "removals"}, set())
    upserts = _each(fields.get("upserts", []), f"{path}.upserts", build)
    removals = _prefixes(fields.get("removals", []), f"{path}.removals")
    return upserts, removals


def delta_from_data(data: object) -> StateDelta:
    fields = _fields(
        data,
        "",
        {
            "schema",
            "gateway",
            "from_revision",
            "to_revision",
            "structure",
            "quarantines",
            "exemptions",
        },
        {"gateway", "from_revision", "to_revision"},
    )
    schema = fields.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ModelError("schema", f"schema {schema!r} is not {SCHEMA_VERSION}")
    structure = fields.get("structure")
    q_upserts, q_removals = _keyed_changes(
        fields.get("quarantines", {}), "quarantines", quarantine_from_data
    )
    e_upserts, e_removals = _keyed_changes(
        fields.get("exemptions", {}), "exemptions", exemption_from_data
    )
    from_revision = fields["from_revision"]
    to_revision = fields["to_revision"]
    for name, value in (("from_revision", from_revision), ("to_revision", to_revision)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelError(name, "expected a non-negative integer")
    return StateDelta(
        gateway=fields["gateway"],
        from_revision=from_revision,
        to_revision=to_revision,
        structure=None if structure is None else _structure_from_data(structure, "structure"),
        quarantines=KeyedChanges(q_upserts, q_removals),
        exemptions=KeyedChanges(e_upserts, e_removals),
    )
