"""DesiredState to and from plain data (JSON, or a TOML policy file).

One schema serves the policy file an operator writes, the state an agent
persists and the document a controller serves.  Unknown fields are errors:
a misspelt ``op25b_shadw = true`` must not silently enforce.
"""

from __future__ import annotations

import gc
import socket
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property, partial
from itertools import compress, repeat
from operator import contains, is_not, itemgetter, not_, or_
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
# exemption).  The builders below take a whole list in a few passes of C
# calls (map over itemgetter, inet_pton, one struct.unpack) and return None
# at the first doubt - an entry that is not a plain dict, a field that does
# not check, a key given twice - so that the per-entry builders run instead
# and name the entry and field at fault.  They accept nothing those refuse.

_get_key = itemgetter("key")
_get_mode = itemgetter("mode")
_pton4 = partial(socket.inet_pton, socket.AF_INET)
_new_tuple = tuple.__new__
_BULK_ERRORS = (ModelError, KeyError, TypeError, ValueError, OSError, struct.error)


def _bulk_prefixes(texts: list[Any]) -> list[Prefix]:
    """Every key text as a Prefix; raises on any it cannot take (see _BULK_ERRORS).

    Bare IPv4 addresses (most keys) go through inet_pton and one unpack;
    anything with a "/" or ":" through Prefix.parse.
    """
    count = len(texts)
    special = list(map(or_, map(contains, texts, repeat("/")), map(contains, texts, repeat(":"))))
    plain = list(map(not_, special))
    v4 = list(compress(texts, plain))
    values = struct.unpack(f">{len(v4)}I", b"".join(map(_pton4, v4)))
    hosts = map(_new_tuple, repeat(Prefix), zip(repeat(4), values, repeat(32)))
    if len(v4) == count:
        return list(hosts)
    others = map(Prefix.parse, compress(texts, special))
    return [next(hosts) if is_plain else next(others) for is_plain in plain]


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
    for index in compress(range(len(values)), map(is_not, values, repeat(None))):
        values[index] = parse_time(values[index], name)
    return values


def _plain_dicts(items: list[Any], allowed: set[str]) -> bool:
    return set(map(type, items)) <= {dict} and all(map(allowed.issuperset, items))


# A list's entries as checked columns, one per field (the entry classes' slots).
Columns = dict[str, Sequence[Any]]


def _quarantine_columns(items: list[Any]) -> Columns | None:
    try:
        if not _plain_dicts(items, _QUARANTINE_FIELDS):
            return None
        modes = list(map(_MODES.__getitem__, map(_get_mode, items)))
        keys = _bulk_prefixes(list(map(_get_key, items)))
        accounts = _checked_texts(_column(items, "account"), "account")
        expires = _times(_column(items, "expires"), "expires")
    except _BULK_ERRORS:
        return None
    return {"key": keys, "mode": modes, "account": accounts, "expires": expires}


def _exemption_columns(items: list[Any]) -> Columns | None:
    try:
        if not _plain_dicts(items, _EXEMPTION_FIELDS):
            return None
        keys = _bulk_prefixes(list(map(_get_key, items)))
        accounts = _checked_texts(_column(items, "account"), "account")
        tickets = _checked_texts(_column(items, "ticket"), "ticket")
        expires = _times(_column(items, "expires"), "expires")
    except _BULK_ERRORS:
        return None
    # Checked as Exemption.__post_init__ checks: texts by _checked_texts,
    # times by parse_time (timezone-aware).
    return {"key": keys, "account": accounts, "ticket": tickets, "expires": expires}


def _bulk_quarantines(items: list[Any]) -> dict[Prefix, Quarantine] | None:
    columns = _quarantine_columns(items)
    return None if columns is None else _keyed(Quarantine, columns, len(items))


def _bulk_exemptions(items: list[Any]) -> dict[Prefix, Exemption] | None:
    columns = _exemption_columns(items)
    return None if columns is None else _keyed(Exemption, columns, len(items))


Entry = TypeVar("Entry", Quarantine, Exemption)


def _keyed(
    cls: type[Entry], columns: dict[str, Sequence[Any]], count: int
) -> dict[Prefix, Entry] | None:
    """The entries by key, or None when two share a key (the per-entry loader names it)."""
    built = dict(zip(columns["key"], entries_unchecked(cls, columns), strict=True))
    return built if len(built) == count else None


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

    What a cold start needs to write the kernel before building a million
    entries (edgectl.agent.kernel_write.pack_columns): the keys, their
    modes and expiries as lists.  ``state()`` then builds exactly the
    DesiredState ``state_from_data`` builds from the same document.
    """

    # Everything but the entries.
    structure: DesiredState
    # Keyed by the entry classes' fields (``key``, ``mode``, ``expires``, ...).
    quarantines: Columns
    exemptions: Columns

    @cached_property
    def entries(self) -> tuple[list[Quarantine], list[Exemption]]:
        """The entry objects, in column order: what packing the keys and ``state`` share."""
        with _bulk():
            return (
                entries_unchecked(Quarantine, self.quarantines),
                entries_unchecked(Exemption, self.exemptions),
            )

    def state(self) -> DesiredState:
        quarantines, exemptions = self.entries
        # state_columns made sure no key is given twice.
        with _bulk():
            return replace(
                self.structure,
                quarantines=dict(zip(self.quarantines["key"], quarantines, strict=True)),
                exemptions=dict(zip(self.exemptions["key"], exemptions, strict=True)),
            )

    def subset(self, keep: Callable[[int, int], bool]) -> DesiredState:
        """The structure with the entries whose key's (version, length) ``keep`` takes.

        For the few prefix keys of a million: the shapes are one C pass, and
        the entries are scanned only when some shape is kept.
        """
        quarantines = _subset(Quarantine, self.quarantines, keep)
        exemptions = _subset(Exemption, self.exemptions, keep)
        return replace(self.structure, quarantines=quarantines, exemptions=exemptions)


def _subset(
    cls: type[Entry], columns: Columns, keep: Callable[[int, int], bool]
) -> dict[Prefix, Entry]:
    keys = columns["key"]
    shapes = set(zip(map(itemgetter(0), keys), map(itemgetter(2), keys), strict=True))
    if not any(keep(version, length) for version, length in shapes):
        return {}
    chosen = [index for index, key in enumerate(keys) if keep(key[0], key[2])]
    picked = {name: [values[index] for index in chosen] for name, values in columns.items()}
    return dict(zip(picked["key"], entries_unchecked(cls, picked), strict=True))


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
        if not (_unique(quarantines["key"]) and _unique(exemptions["key"])):
            return None
    return StateColumns(_state(fields, {}, {}), quarantines, exemptions)


def _unique(keys: Sequence[Prefix]) -> bool:
    return len(set(keys)) == len(keys)


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


# -- a state of exact keys, IPv4 addresses packed ------------------------------------


@dataclass(frozen=True)
class ExactKeys:
    """One list's entries (quarantines or exemptions) as columns: the single IPv4
    addresses as 4-byte packed addresses, the IPv6 keys as Prefixes, each
    with its modes (None for exemptions) and expiries in the same order."""

    v4: list[bytes]
    v4_modes: list[QuarantineMode] | None
    v4_expires: list[datetime | None]
    v6: list[Prefix]
    v6_modes: list[QuarantineMode] | None
    v6_expires: list[datetime | None]


@dataclass(frozen=True)
class ExactColumns:
    """A state document whose every key is exact (a single IPv4 address, or an
    IPv6 key of a delegated length: one hash-set element each), checked whole,
    no entry object built.

    What ``edgectl apply -f`` onto no table needs: lint
    (``lint.exact_clear``) and the kernel's elements
    (``kernel_write.pack_exact``) take these lists directly.  ``state()``
    builds the DesiredState ``state_from_data`` builds from the same document.
    """

    # Everything but the entries (its quarantines and exemptions are empty).
    structure: DesiredState
    quarantines: ExactKeys
    exemptions: ExactKeys
    data: Any  # the document itself, for ``state()``

    def state(self) -> DesiredState:
        return state_from_data(self.data)


def _exact_keys(
    items: list[Any], modes: list[QuarantineMode] | None, expires: list[datetime | None]
) -> ExactKeys:
    """Raises (one of _BULK_ERRORS) where a key is neither a bare dotted quad nor an
    IPv6 key, or is given twice: the Prefix-based loaders take or name those."""
    texts = list(map(_get_key, items))
    special = list(map(or_, map(contains, texts, repeat("/")), map(contains, texts, repeat(":"))))
    if not any(special):
        v4 = list(map(_pton4, texts))
        v6: list[Prefix] = []
        keys = ExactKeys(v4, modes, expires, v6, None if modes is None else [], [])
    else:
        plain = list(map(not_, special))
        v4 = list(map(_pton4, compress(texts, plain)))
        v6 = list(map(Prefix.parse, compress(texts, special)))
        if any(key.version != 6 for key in v6):
            raise ValueError("an IPv4 prefix key")
        keys = ExactKeys(
            v4,
            None if modes is None else list(compress(modes, plain)),
            list(compress(expires, plain)),
            v6,
            None if modes is None else list(compress(modes, special)),
            list(compress(expires, special)),
        )
    if len(set(v4)) != len(v4) or len(set(v6)) != len(v6):
        raise ValueError("a key given twice")
    return keys


def exact_columns(data: object) -> ExactColumns | None:
    """``data`` checked as ``state_from_data`` checks it, when every key is exact;
    None for any other document or any doubt - a bad field anywhere included,
    so that ``state_from_data`` names it.

    The same checks as ``_quarantine_columns``/``_exemption_columns`` (plain
    dicts of known fields, modes, texts, timezone-aware times, no key twice);
    a bare dotted quad is what ``_bulk_prefixes`` takes through inet_pton.
    """
    try:
        fields = _state_fields(data)
        with _bulk():
            quarantines = _list(fields.get("quarantines", []), "quarantines")
            exemptions = _list(fields.get("exemptions", []), "exemptions")
            if not (
                _plain_dicts(quarantines, _QUARANTINE_FIELDS)
                and _plain_dicts(exemptions, _EXEMPTION_FIELDS)
            ):
                return None
            modes = list(map(_MODES.__getitem__, map(_get_mode, quarantines)))
            _checked_texts(_column(quarantines, "account"), "account")
            held = _exact_keys(
                quarantines, modes, _times(_column(quarantines, "expires"), "expires")
            )
            _checked_texts(_column(exemptions, "account"), "account")
            _checked_texts(_column(exemptions, "ticket"), "ticket")
            exempt = _exact_keys(
                exemptions, None, _times(_column(exemptions, "expires"), "expires")
            )
        structure = _state(fields, {}, {})
    except _BULK_ERRORS:
        return None
    lengths = structure.delegated_lengths()
    if any(key.length not in lengths for key in (*held.v6, *exempt.v6)):
        return None  # a range: an interval-map element, rendered with the model
    return ExactColumns(structure, held, exempt, data)
