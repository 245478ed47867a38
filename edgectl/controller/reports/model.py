"""What every report format becomes, and the classes a report may have."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgectl.model import ModelError, Prefix

# Classes a policy may act on.  Anything a subscriber's machine *did*.
ACTIONABLE = frozenset(
    {"spam", "phishing", "malware", "botnet", "login-attack", "ddos", "fraud", "abuse"}
)
# Classes that describe a subscriber's exposure, not its behaviour (an open
# resolver, a port scan seen from outside, a not-spam complaint): kept and
# listed, never a strike.  A policy naming one is refused, and the engine
# checks again (a class moved here later must not keep acting through an old policy).
INFORMATIONAL = frozenset(
    {"scan", "open-service", "vulnerable", "not-spam", "auth-failure", "other"}
)
CLASSES = ACTIONABLE | INFORMATIONAL

# The longest message id kept (RFC 5322 has no bound; ids over this are
# hashed into the de-duplication key anyway, this only bounds the column).
MESSAGE_ID_MAX = 250


class ParseError(ValueError):
    """A report the controller cannot read; ``where`` names the line or field."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Report:
    """One abuse event: who (address) did what (class) when (at), as a reporter saw it."""

    address: Prefix
    at: datetime
    cls: str
    format: str  # arf / xarf / csv
    message_id: str | None = None
    # A few fields for the analyst (reporter, subject, user agent); bounded.
    detail: dict[str, Any] = field(default_factory=dict)
    # Where its time came from, for an error about it ("line 3: time").
    where: str = "time"

    @property
    def informational(self) -> bool:
        return self.cls in INFORMATIONAL


def parse_address(text: str, where: str) -> Prefix:
    """One IPv4 or IPv6 address (a report names a host, not a network)."""
    value = text.strip().strip("[]")
    if not value:
        raise ParseError(where, "no address")
    try:
        prefix = Prefix.parse(value)
    except (ModelError, ValueError) as error:
        raise ParseError(where, f"{value!r} is not an IP address") from error
    if not prefix.is_host:
        raise ParseError(where, f"{value!r} is a network, not one address")
    return prefix


def parse_time(text: str, where: str) -> datetime:
    """ISO 8601 with a zone, or Unix seconds (Shadowserver's and X-ARF's forms)."""
    value = text.strip()
    if not value:
        raise ParseError(where, "no time")
    try:
        if value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T", 1))
    except (ValueError, OverflowError, OSError) as error:
        raise ParseError(where, f"{value!r} is not a time (ISO 8601 with zone)") from error
    if parsed.tzinfo is None:
        # A feed's naive time could be any zone; guessing would misattribute
        # on a dynamic pool, so say so instead.
        raise ParseError(where, f"{value!r} has no time zone")
    return parsed.astimezone(UTC)


def check_class(value: str, where: str) -> str:
    cls = value.strip().lower()
    if cls not in CLASSES:
        raise ParseError(where, f"unknown class {value!r} (one of {', '.join(sorted(CLASSES))})")
    return cls


def check_id(value: str, where: str) -> str | None:
    """A reporter's message or report id: printable text (PostgreSQL refuses NUL),
    at most ``MESSAGE_ID_MAX`` characters; empty is none."""
    text = value.strip()
    if not text:
        return None
    if not text.isprintable():
        raise ParseError(where, "must be printable text")
    return text[:MESSAGE_ID_MAX]


def bounded(value: object, length: int = 200) -> str | None:
    if value is None:
        return None
    text = "".join(c for c in str(value) if c.isprintable())
    return text[:length] or None
