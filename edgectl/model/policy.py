"""The policy one gateway enforces: pools, relays, limits, exemptions, quarantines.

Pure, validated, immutable values with no I/O.  Construction checks each
value on its own (types, ranges, names); ``edgectl.model.lint`` checks how
values combine.  Both raise or report a ``ModelError`` naming the field.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from itertools import repeat
from types import MappingProxyType
from typing import Any, TypeVar

from edgectl.model.errors import ModelError
from edgectl.model.prefix import Prefix

# Names end up inside nft identifiers (chain ``pool_<name>``, counter
# ``op25b_<name>``); nft caps identifiers at 256 bytes but operators read
# them in ``nft list``, so keep them short and unquoted.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

SUBMISSION_PORTS = frozenset({465, 587})  # RFC 8314 and RFC 6409: never OP25B


class PoolKind(StrEnum):
    DYNAMIC = "dynamic"
    STATIC = "static"
    INFRASTRUCTURE = "infrastructure"


class QuarantineMode(StrEnum):
    SMTP = "smtp"  # every mail port blocked
    WALLED_GARDEN = "walled-garden"  # DNS to the resolvers and HTTP(S) to the portal only
    BLOCK = "block"  # everything dropped


@dataclass(frozen=True, slots=True)
class ModePolicy:
    """What a quarantine mode means as policy, wherever it is enforced.

    How the packet path consults each mode's set is the agent's business
    (``edgectl.agent.keys.MODE_LAYOUT``); these are the facts the
    controller, lint and the API decide with.
    """

    # When two holds land on one key (a stale session, a prefix hold over an
    # account's address), the higher severity wins, so nobody escapes a hold.
    severity: int
    # The subscriber may still reach settings.resolvers and settings.portal;
    # a gateway without both cannot enforce the mode as meant.
    needs_garden: bool
    # Served instead where the mode's needs are unmet: never a milder mode,
    # so a missing portal does not release anyone.
    fallback: QuarantineMode | None
    # The subscriber may lift the hold from the notice portal ("I have
    # cleaned my machine"); staff lift every mode.
    self_release: bool


# The one table of quarantine modes' policy facts: a mode missing here is a
# KeyError at its first hold, so tests/test_model.py checks it covers the enum.
MODE_POLICY: Mapping[QuarantineMode, ModePolicy] = MappingProxyType(
    {
        QuarantineMode.SMTP: ModePolicy(
            severity=1, needs_garden=False, fallback=None, self_release=False
        ),
        QuarantineMode.WALLED_GARDEN: ModePolicy(
            severity=2, needs_garden=True, fallback=QuarantineMode.BLOCK, self_release=True
        ),
        QuarantineMode.BLOCK: ModePolicy(
            severity=3, needs_garden=False, fallback=None, self_release=False
        ),
    }
)


def enforced_mode(mode: QuarantineMode, garden_ready: bool) -> QuarantineMode:
    """The mode a gateway enforces for ``mode``: its fallback where its needs are unmet."""
    policy = MODE_POLICY[mode]
    if policy.needs_garden and not garden_ready and policy.fallback is not None:
        return policy.fallback
    return mode


class BlockAction(StrEnum):
    RESET = "reset"  # TCP reset: the subscriber's MTA fails fast instead of timing out
    DROP = "drop"


class Hook(StrEnum):
    FORWARD = "forward"
    OUTPUT = "output"


def check_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ModelError(
            path, f"{value!r} is not a name: use 1-32 of a-z, 0-9 and _, starting with a letter"
        )
    return value


def check_int(value: object, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(path, f"expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ModelError(path, f"{value} is out of range {low}..{high}")
    return value


def check_port(value: object, path: str) -> int:
    return check_int(value, path, 1, 65535)


def check_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ModelError(path, f"expected true or false, got {value!r}")
    return value


def check_expiry(value: object, path: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ModelError(path, "expiry must be a timezone-aware time")
    return value


def check_text(value: object, path: str, *, limit: int = 200) -> str | None:
    """Free text (account ids, tickets) that must stay printable in logs."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ModelError(path, f"expected a non-empty string of at most {limit} characters")
    if not value.isprintable():
        raise ModelError(path, "must be printable text")
    return value


@dataclass(frozen=True, slots=True)
class Pool:
    """Address space subscribers get their addresses from.

    ``subscriber_prefix_len`` is the IPv6 delegation size (a /56 or a /64):
    limits and quarantines key on it, because an IPv6 subscriber picks any
    /128 inside it and would otherwise dodge every per-address rule.
    """

    name: str
    kind: PoolKind
    prefixes: tuple[Prefix, ...]
    subscriber_prefix_len: int | None = None
    rate_limit: str | None = None
    op25b_shadow: bool = False

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        if not isinstance(self.kind, PoolKind):
            raise ModelError("kind", f"must be one of {', '.join(k.value for k in PoolKind)}")
        if not self.prefixes:
            raise ModelError("prefixes", "a pool needs at least one prefix")
        if any(not isinstance(p, Prefix) for p in self.prefixes):
            raise ModelError("prefixes", "must be prefixes")
        has_v6 = any(p.version == 6 for p in self.prefixes)
        if has_v6 and self.kind is not PoolKind.INFRASTRUCTURE:
            if self.subscriber_prefix_len is None:
                raise ModelError(
                    "subscriber_prefix_len",
                    "an IPv6 pool must say how long each subscriber's delegated prefix is "
                    "(for example 56 or 64)",
                )
            check_int(self.subscriber_prefix_len, "subscriber_prefix_len", 32, 64)
            for index, prefix in enumerate(self.prefixes):
                if prefix.version == 6 and prefix.length > self.subscriber_prefix_len:
                    raise ModelError(
                        f"prefixes[{index}]",
                        f"{prefix} is longer than the delegated /{self.subscriber_prefix_len}",
                    )
        elif self.subscriber_prefix_len is not None and not has_v6:
            raise ModelError("subscriber_prefix_len", "only an IPv6 pool delegates prefixes")
        if self.rate_limit is not None:
            check_name(self.rate_limit, "rate_limit")
            if self.kind is PoolKind.INFRASTRUCTURE:
                raise ModelError("rate_limit", "infrastructure pools are not subscribers")
        check_bool(self.op25b_shadow, "op25b_shadow")
        if self.op25b_shadow and self.kind is not PoolKind.DYNAMIC:
            raise ModelError("op25b_shadow", "only dynamic pools are subject to OP25B")

    def key_length(self, version: int) -> int:
        """How many leading bits identify one subscriber of this pool."""
        if version == 4:
            return 32
        assert self.subscriber_prefix_len is not None
        return self.subscriber_prefix_len


@dataclass(frozen=True, slots=True)
class Relay:
    """The ISP's own MX/MSA: dynamic pools may still reach these on port 25."""

    name: str
    prefixes: tuple[Prefix, ...]

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        if not self.prefixes:
            raise ModelError("prefixes", "a relay needs at least one prefix")


@dataclass(frozen=True, slots=True)
class RateLimitProfile:
    """Per-subscriber limits on new mail connections.

    ``new_per_minute``/``burst``: token bucket on new connections.
    ``concurrent``: open mail connections at once.
    ``per_destination``: open connections from one subscriber to one
    destination address, the shape of bulk sending to a single MX.
    ``shadow``: count and log offenders but let them through.
    """

    name: str
    new_per_minute: int
    burst: int
    concurrent: int | None = None
    per_destination: int | None = None
    shadow: bool = False

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        check_int(self.new_per_minute, "new_per_minute", 1, 1_000_000)
        check_int(self.burst, "burst", 1, 1_000_000)
        if self.concurrent is not None:
            check_int(self.concurrent, "concurrent", 1, 1_000_000)
        if self.per_destination is not None:
            check_int(self.per_destination, "per_destination", 1, 1_000_000)
        check_bool(self.shadow, "shadow")


@dataclass(frozen=True, slots=True)
class Exemption:
    """One account allowed to reach outside MX on port 25 (a ticketed exception)."""

    key: Prefix
    account: str | None = None
    ticket: str | None = None
    expires: datetime | None = None

    def __post_init__(self) -> None:
        check_text(self.account, "account")
        check_text(self.ticket, "ticket")
        check_expiry(self.expires, "expires")


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A subscriber key held in one of the quarantine modes, optionally until ``expires``."""

    key: Prefix
    mode: QuarantineMode
    account: str | None = None
    expires: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, QuarantineMode):
            raise ModelError("mode", f"must be one of {', '.join(m.value for m in QuarantineMode)}")
        check_text(self.account, "account")
        check_expiry(self.expires, "expires")


# A frozen dataclass's __init__ sets each field through object.__setattr__
# and then validates: ~0.8 us an entry, for the million entries a state file
# or snapshot holds, of a start-up budget measured against a raw ``nft -f``.
# The slot descriptors' own __set__ write the same slots directly.
_new_object = object.__new__
_set_q_key, _set_q_mode, _set_q_account, _set_q_expires = (
    Quarantine.__dict__[name].__set__ for name in ("key", "mode", "account", "expires")
)


def quarantine_unchecked(
    key: Prefix, mode: QuarantineMode, account: str | None, expires: datetime | None
) -> Quarantine:
    """A Quarantine whose fields the caller has checked exactly as ``__post_init__`` does
    (the state loader: a parsed key, a mode from the enum, ``check_text``, ``parse_time``)."""
    entry: Quarantine = _new_object(Quarantine)
    _set_q_key(entry, key)
    _set_q_mode(entry, mode)
    _set_q_account(entry, account)
    _set_q_expires(entry, expires)
    return entry


def entries_unchecked(cls: type[Entry], columns: Mapping[str, Sequence[Any]]) -> list[Entry]:
    """Many entries of ``cls`` from columns of values checked as ``quarantine_unchecked``
    says (every field, one value an entry each): a few C calls a field, no Python call
    an entry - the loader of a 200k-key policy or snapshot."""
    if set(columns) != set(cls.__slots__):
        raise TypeError(f"{cls.__name__} needs exactly the columns {cls.__slots__}")
    count = len(next(iter(columns.values())))
    entries: list[Entry] = list(map(_new_object, repeat(cls, count)))
    for name, values in columns.items():
        deque(map(cls.__dict__[name].__set__, entries, values), maxlen=0)
    return entries


DEFAULT_MAIL_PORTS = (25, 465, 587)


@dataclass(frozen=True, slots=True)
class GardenDestination:
    """A destination a walled-garden subscriber may still reach: OS and
    antivirus update services (RFC 6561 section 4: cleaning up needs them)."""

    prefix: Prefix
    ports: tuple[int, ...] = (80, 443)

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, Prefix):
            raise ModelError("prefix", "must be a prefix")
        if not self.ports:
            raise ModelError("ports", "must list at least one port")
        for index, port in enumerate(self.ports):
            check_port(port, f"ports[{index}]")
        if len(set(self.ports)) != len(self.ports):
            raise ModelError("ports", "lists a port twice")


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """How one gateway enforces: hooks, block action, logging, walled garden."""

    hooks: tuple[Hook, ...] = (Hook.FORWARD,)
    block_action: BlockAction = BlockAction.RESET
    mail_ports: tuple[int, ...] = DEFAULT_MAIL_PORTS
    op25b_ports: tuple[int, ...] = (25,)
    # nflog group for block evidence; None logs to the kernel log instead.
    log_group: int | None = None
    log_per_second: int = 10
    resolvers: tuple[Prefix, ...] = ()
    portal: tuple[Prefix, ...] = ()
    # Where walled-garden subscribers' plain HTTP (tcp/80, any destination)
    # is sent by DNAT: one portal address per family (inside ``portal``) and
    # the port the notice portal listens on.  None: no steering.  HTTPS is
    # never steered: answering it as another host needs that host's key.
    steer_http_4: Prefix | None = None
    steer_http_6: Prefix | None = None
    steer_http_port: int = 80
    # Update services reachable from inside the garden (and never steered).
    garden_allow: tuple[GardenDestination, ...] = ()
    # Entries per rate/concurrency meter set; a full set stops adding keys,
    # so size it above the subscribers one gateway serves.
    meter_size: int = 65536
    # False: non-mail traffic skips connection tracking and is checked per
    # packet, one hash lookup.  Saves the ~20 % that conntrack costs a
    # connection setup.  When a served pool's profile has a concurrency cap
    # (ct count), mail stays tracked and the rest is notracked at raw
    # priority - and untracked packets are never NATed, so then only for
    # gateways that neither NAT nor filter statefully.  Without such caps the
    # table uses no conntrack at all (new mail is told by its SYN flag), and
    # a NAT on the same host keeps tracking everything as before.
    track_non_mail: bool = True

    def __post_init__(self) -> None:
        if not self.hooks or any(not isinstance(h, Hook) for h in self.hooks):
            raise ModelError("hooks", "must list one or more of forward, output")
        if len(set(self.hooks)) != len(self.hooks):
            raise ModelError("hooks", "lists a hook twice")
        if not isinstance(self.block_action, BlockAction):
            raise ModelError("block_action", "must be reset or drop")
        for name in ("mail_ports", "op25b_ports"):
            ports = getattr(self, name)
            if not ports:
                raise ModelError(name, "must list at least one port")
            for index, port in enumerate(ports):
                check_port(port, f"{name}[{index}]")
            if len(set(ports)) != len(ports):
                raise ModelError(name, "lists a port twice")
        if self.log_group is not None:
            check_int(self.log_group, "log_group", 0, 65535)
        check_int(self.log_per_second, "log_per_second", 1, 10_000)
        check_int(self.meter_size, "meter_size", 1024, 16_777_216)
        check_bool(self.track_non_mail, "track_non_mail")
        self._check_steering()
        for index, destination in enumerate(self.garden_allow):
            if not isinstance(destination, GardenDestination):
                raise ModelError(f"garden_allow[{index}]", "must be a destination")

    def _check_steering(self) -> None:
        check_port(self.steer_http_port, "steer_http_port")
        for version, name in ((4, "steer_http_4"), (6, "steer_http_6")):
            address = getattr(self, name)
            if address is None:
                continue
            if not isinstance(address, Prefix) or address.version != version:
                raise ModelError(name, f"must be an IPv{version} address")
            if not address.is_host:
                raise ModelError(name, f"{address} is a network: give the portal's one address")
            if not any(p.contains(address) for p in self.portal):
                # The filter side admits steered connections because their
                # new destination is in the portal set.
                raise ModelError(name, f"{address} is not inside settings.portal")
        if self.steering:
            # DNAT is conntrack's work: an untracked packet is never NATed.
            if not self.track_non_mail:
                raise ModelError(
                    "steer_http_4" if self.steer_http_4 is not None else "steer_http_6",
                    "steering needs connection tracking (NAT): set track_non_mail = true",
                )
            # The redirect happens in prerouting, which sees forwarded traffic.
            if Hook.FORWARD not in self.hooks:
                raise ModelError("hooks", "steering HTTP to the portal needs the forward hook")

    @property
    def steering(self) -> bool:
        return self.steer_http_4 is not None or self.steer_http_6 is not None

    @property
    def garden_ready(self) -> bool:
        """Resolvers and a portal: what a mode that ``needs_garden`` lets subscribers reach."""
        return bool(self.resolvers and self.portal)


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Everything one gateway must enforce, at one revision.

    Quarantines and exemptions are keyed by subscriber key: one entry per key,
    the last one given wins nowhere, a duplicate is an error.
    """

    gateway: str
    revision: int
    settings: GatewaySettings = field(default_factory=GatewaySettings)
    pools: tuple[Pool, ...] = ()
    relays: tuple[Relay, ...] = ()
    rate_limits: tuple[RateLimitProfile, ...] = ()
    exemptions: Mapping[Prefix, Exemption] = field(default_factory=dict)
    quarantines: Mapping[Prefix, Quarantine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_text(self.gateway, "gateway", limit=64)
        check_int(self.revision, "revision", 0, 2**63 - 1)
        for label, items in (
            ("pools", self.pools),
            ("relays", self.relays),
            ("rate_limits", self.rate_limits),
        ):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    raise ModelError(f"{label}[{item.name}]", "name used twice")
                seen.add(item.name)

    def pool(self, name: str) -> Pool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def profile(self, name: str) -> RateLimitProfile:
        for profile in self.rate_limits:
            if profile.name == name:
                return profile
        raise KeyError(name)

    def delegated_lengths(self) -> tuple[int, ...]:
        """The IPv6 subscriber key lengths in use: one quarantine set per length."""
        return tuple(
            sorted(
                {p.subscriber_prefix_len for p in self.pools if p.subscriber_prefix_len is not None}
            )
        )


Entry = TypeVar("Entry", Quarantine, Exemption)


def keyed(entries: Iterable[Entry], path: str) -> dict[Prefix, Entry]:
    """Index entries by subscriber key, refusing a key given twice."""
    result: dict[Prefix, Entry] = {}
    for entry in entries:
        if entry.key in result:
            raise ModelError(f"{path}[{entry.key}]", "key given twice")
        result[entry.key] = entry
    return result
