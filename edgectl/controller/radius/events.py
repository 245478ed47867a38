"""Decoded Accounting-Requests -> the store's accounting events (pure, no I/O).

What each packet means:

* Acct-Status-Type Start (1), Interim-Update (3), Stop (2): the session
  ``Acct-Session-Id`` of the account; Accounting-On (7) / Off (8): the NAS
  restarted, every open session it had is over.  Others (Failed, the
  tunnel types) carry no binding and are answered as ``ignored``.
* The time is Event-Timestamp if sent, else the arrival less
  Acct-Delay-Time (RFC 2866 5.2: how long the NAS has been trying to send
  it), so a retransmission with a grown delay still names the same moment.
* IPv4 from Framed-IP-Address (a host); IPv6 from Delegated-IPv6-Prefix,
  else Framed-IPv6-Prefix: a subscriber is a delegated prefix, never a /128,
  so Framed-IPv6-Address (RFC 6911) is not a binding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from edgectl.controller.accounting import AccountingEvent
from edgectl.model import ModelError, Prefix

# The store's account alphabet (api/models.py ACCOUNT_PATTERN), so a RADIUS
# account is reachable through /v1/accounts/{account} like any other.
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+:-]{0,199}")

# An attribute as pyrad keys its raw values: a code, or (vendor id, vendor type).
AttributeKey = int | tuple[int, int]
USER_NAME = 1
CLASS = 25

Kind = Literal["start", "interim", "stop", "on", "off"]
KINDS: dict[int, Kind] = {1: "start", 2: "stop", 3: "interim", 7: "on", 8: "off"}

# Framed-IP-Address values that are instructions, not addresses (RFC 2865 5.8).
_NOT_ADDRESSES = {"255.255.255.255", "255.255.255.254", "0.0.0.0"}

# Event-Timestamps further ahead than this are a NAS clock gone wrong; arrival
# time is the better guess (a future start would order every later Stop wrong).
FUTURE_SLACK = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Accounting:
    """What the feed reads from one authenticated Accounting-Request."""

    identifier: int
    authenticator: bytes
    status_type: int
    session_id: str | None
    account: bytes | None  # raw value of the configured account attribute
    framed_ip: str | None
    delegated_prefix: str | None
    framed_prefix: str | None
    event_timestamp: int | None
    delay: int | None
    session_time: int | None
    reply: bytes  # the Accounting-Response, sent once the binding is committed


@dataclass(frozen=True, slots=True)
class AccountRule:
    """Which attribute names the account, and whether ``user@realm`` loses its realm."""

    key: AttributeKey = USER_NAME
    strip_realm: bool = False

    def describe(self) -> str:
        if self.key == USER_NAME:
            return "User-Name" + (" (realm stripped)" if self.strip_realm else "")
        if self.key == CLASS:
            return "Class"
        assert isinstance(self.key, tuple)
        return f"Vendor-Specific {self.key[0]}/{self.key[1]}"


class Unusable(Exception):
    """An authentic packet that binds nothing: answered (the NAS would only
    retransmit it), counted under ``outcome`` and not sent to the store."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


def account_of(raw: bytes | None, rule: AccountRule) -> str:
    if not raw:
        raise Unusable("invalid", f"no {rule.describe()}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unusable("invalid", f"{rule.describe()} is not text") from None
    if rule.strip_realm:
        text = text.partition("@")[0]
    if not _ACCOUNT.fullmatch(text):
        raise Unusable("invalid", f"{rule.describe()} {text[:64]!r} is not an account id")
    return text


def _moment(packet: Accounting, arrival: datetime) -> datetime:
    if packet.event_timestamp is not None:
        stamped = datetime.fromtimestamp(packet.event_timestamp, UTC)
        if stamped <= arrival + FUTURE_SLACK:
            return stamped
    if packet.delay:
        return arrival - timedelta(seconds=packet.delay)
    return arrival


def _prefix(text: str | None, version: int) -> Prefix | None:
    """The binding in an address attribute; None for "no address" values and
    for an IPv6 prefix longer than /64, which is a link, not a subscriber (the
    rest of the packet still counts)."""
    if text is None or text in _NOT_ADDRESSES:
        return None
    try:
        prefix = Prefix.parse(text)
    except ModelError:
        return None  # pyrad decoded it from octets, so this is not expected
    if prefix.version != version or (version == 6 and prefix.length > 64):
        return None
    return prefix


def to_event(
    source: str, packet: Accounting, arrival: datetime, rule: AccountRule
) -> AccountingEvent:
    """The event ``packet`` from NAS ``source`` stands for; ``Unusable`` if none."""
    kind = KINDS.get(packet.status_type)
    if kind is None:
        raise Unusable("ignored", f"Acct-Status-Type {packet.status_type}")
    at = _moment(packet, arrival)
    if kind in ("on", "off"):
        return AccountingEvent(source, kind, at, None, None)
    if not packet.session_id:
        raise Unusable("invalid", "no Acct-Session-Id")
    return AccountingEvent(
        source=source,
        kind=kind,
        at=at,
        session_id=packet.session_id,
        account=account_of(packet.account, rule),
        ipv4=_prefix(packet.framed_ip, 4),
        ipv6=_prefix(packet.delegated_prefix or packet.framed_prefix, 6),
        # A Start's Acct-Session-Time (if a NAS sends one) is 0 by definition.
        session_time=packet.session_time if kind != "start" else None,
    )
