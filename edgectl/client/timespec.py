"""Times and durations as abuse staff type them.

A time is RFC 3339 (``2026-12-01T10:00:00Z``; a date alone means midnight
UTC) or relative to now (``-2h``, ``-90m``, ``-7d``); a duration is ``90m``,
``24h``, ``7d``, ``30s`` or plain seconds.  Both are turned into what the API
takes (RFC 3339 text, whole seconds) here, so a typo is a usage error (exit 2)
before anything is sent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from edgectl.client.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d{1,9})([smhdw]?)$")
_RELATIVE = re.compile(r"^-(\d{1,9})([smhdw])$")


def duration(text: str, option: str = "--duration") -> int:
    """``90m`` -> 5400 (seconds)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise UsageError(f"{option}: {text!r} is not a duration such as 90m, 24h or 7d")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < 1:
        raise UsageError(f"{option}: a duration must be at least 1s")
    return seconds


def instant(text: str, option: str, now: datetime | None = None) -> str:
    """``-2h`` or RFC 3339 -> RFC 3339 in UTC (``...Z``)."""
    text = text.strip()
    moment: datetime
    relative = _RELATIVE.match(text)
    if relative is not None:
        base = now or datetime.now(UTC)
        try:
            moment = base - timedelta(seconds=int(relative.group(1)) * _UNITS[relative.group(2)])
        except OverflowError:
            raise UsageError(f"{option}: {text!r} is too far back") from None
    else:
        try:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise UsageError(
                f"{option}: {text!r} is not a time such as 2026-12-01T10:00:00Z or -2h"
            ) from None
        if moment.tzinfo is None:
            if "T" in text or " " in text:
                # A local wall-clock time is ambiguous on a desk spanning zones.
                raise UsageError(f"{option}: {text!r} needs a zone (Z or +01:00)")
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def is_relative(text: str) -> bool:
    return _RELATIVE.match(text.strip()) is not None
