"""An account's one timeline: sessions, offender reports and audit entries, newest first.

Holds appear through their audit entries (create, update, lift, expiry), which
carry the actor and reason of each step; the hold rows themselves are shown
above the timeline, with their controls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    at: str
    kind: str  # session / offender / audit
    what: str
    actor: str
    reason: str | None


def _sessions(intervals: list[dict[str, Any]]) -> list[Event]:
    events: list[Event] = []
    for interval in intervals:
        events.append(
            Event(
                interval["started"],
                "session",
                f"held {interval['address']}",
                interval["source"],
                None,
            )
        )
        if interval.get("ended"):
            events.append(
                Event(
                    interval["ended"],
                    "session",
                    f"released {interval['address']}",
                    interval["source"],
                    None,
                )
            )
    return events


def _offenders(offenders: list[dict[str, Any]]) -> list[Event]:
    return [
        Event(
            o["last_seen"],
            "offender",
            f"{o['count']} x {o['kind']} ({o['policy']}{', shadow' if o['shadow'] else ''}) "
            f"from {o['key']} on {', '.join(o['gateways'])}",
            "gateway block log",
            None,
        )
        for o in offenders
    ]


def _audit(entries: list[dict[str, Any]]) -> list[Event]:
    return [
        Event(
            e["at"],
            "audit",
            f"{e['action']} {e['object_type']} {e['object_id']}",
            e["actor"],
            e["reason"],
        )
        for e in entries
    ]


def build(
    intervals: list[dict[str, Any]],
    offenders: list[dict[str, Any]],
    audit: list[dict[str, Any]],
    limit: int = 300,
) -> list[Event]:
    events = [*_sessions(intervals), *_offenders(offenders), *_audit(audit)]
    # RFC 3339 UTC text from one formatter sorts as time does.
    events.sort(key=lambda e: e.at, reverse=True)
    return events[:limit]
