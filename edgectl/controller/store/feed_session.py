"""One accounting session (a ``session_history`` row of the feed), folded from its events.

Every field is a fold that gives the same value whatever order the events
come in (see ``store.feed``): minima for the start and the Stop, the
earliest event for each address, the latest for ``last_seen`` clamped to
the end, and the end recomputed from the facts each time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edgectl.controller.compile import hex_of
from edgectl.controller.store.db import time_param
from edgectl.controller.store.history import COLUMNS
from edgectl.model import Prefix


@dataclass(slots=True)
class FeedSession:
    """One history row of the feed, folded in memory."""

    account_id: int
    source: str
    session_id: str
    started: datetime
    last_seen: datetime
    stopped: datetime | None = None
    ended: datetime | None = None
    ipv4: Prefix | None = None
    ipv4_seen: datetime | None = None
    ipv6: Prefix | None = None
    ipv6_seen: datetime | None = None
    id: int | None = None
    old_hexes: dict[int, str | None] = field(default_factory=dict)

    @classmethod
    def stored(cls, row: Any) -> FeedSession:
        session = cls(
            account_id=row.account_id,
            source=row.source,
            session_id=row.session_id,
            started=row.started,
            last_seen=row.last_seen,
            stopped=row.stopped,
            ended=row.ended,
            ipv4=None if row.ipv4 is None else Prefix.parse(row.ipv4),
            ipv4_seen=row.ipv4_seen,
            ipv6=None if row.ipv6 is None else Prefix.parse(row.ipv6),
            ipv6_seen=row.ipv6_seen,
            id=row.id,
        )
        session.old_hexes = {4: row.ipv4_hex, 6: row.ipv6_hex}
        return session

    def state(self) -> tuple[Any, ...]:
        return (
            self.started,
            self.last_seen,
            self.stopped,
            self.ended,
            self.ipv4,
            self.ipv4_seen,
            self.ipv6,
            self.ipv6_seen,
        )

    def fold(
        self,
        kind: str,
        at: datetime,
        session_time: int | None,
        ipv4: Prefix | None,
        ipv6: Prefix | None,
        restarts: list[datetime],
    ) -> None:
        """One Start, Interim or Stop; ``restarts``: its NAS's, sorted.

        Spelt out per family (no getattr by name, no text unless two events
        tie): the feed folds every event it stores.
        """
        begun = at - timedelta(seconds=session_time) if session_time else at
        if begun < self.started:
            self.started = begun
        if kind == "stop" and (self.stopped is None or at < self.stopped):
            self.stopped = at
        # Each address: the earliest event's, ties broken by the address text.
        if ipv4 is not None and (
            self.ipv4_seen is None
            or at < self.ipv4_seen
            or (at == self.ipv4_seen and str(ipv4) < str(self.ipv4))
        ):
            self.ipv4, self.ipv4_seen = ipv4, at
        if ipv6 is not None and (
            self.ipv6_seen is None
            or at < self.ipv6_seen
            or (at == self.ipv6_seen and str(ipv6) < str(self.ipv6))
        ):
            self.ipv6, self.ipv6_seen = ipv6, at
        self.settle(restarts, latest=at)

    def settle(self, restarts: list[datetime], latest: datetime | None = None) -> None:
        """``ended`` from the facts, and ``last_seen`` clamped to it."""
        ended = self.stopped
        if restarts:
            after = bisect.bisect_right(restarts, self.started)
            if after < len(restarts) and (ended is None or restarts[after] < ended):
                ended = restarts[after]
        self.ended = ended
        if latest is not None and latest > self.last_seen:
            self.last_seen = latest
        if ended is not None and ended < self.last_seen:
            self.last_seen = ended

    def hexes(self) -> dict[int, str | None]:
        return {
            4: None if self.ipv4 is None else hex_of(self.ipv4),
            6: None if self.ipv6 is None else hex_of(self.ipv6),
        }

    def row(
        self, connection: Any, hexes: dict[int, str | None], texts: dict[datetime, object]
    ) -> tuple[Any, ...]:
        """The row (``history.COLUMNS``) as the driver takes it; ``texts`` memoizes
        time conversions across a batch (a Start's started, last_seen and
        ipv4_seen are one time).  Written out, not a helper per time: the
        feed builds a row per session it writes."""
        converted: list[object] = []
        for value in (
            self.ipv4_seen,
            self.ipv6_seen,
            self.started,
            self.last_seen,
            self.stopped,
            self.ended,
        ):
            if value is not None:
                text = texts.get(value)
                if text is None:
                    text = texts[value] = time_param(connection, value)
                converted.append(text)
            else:
                converted.append(None)
        return (
            self.account_id,
            self.source,
            self.session_id,
            None if self.ipv4 is None else str(self.ipv4),
            hexes[4],
            None if self.ipv6 is None else str(self.ipv6),
            hexes[6],
            *converted,
        )


# What an UPDATE of a stored session sets: every column after the session's
# key (COLUMNS begins account_id, source, session_id).
UPDATED = COLUMNS[3:]


def binding_fields(state: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """Of ``_Session.state()``: started, ended and the addresses (not last_seen, stopped)."""
    if state is None:
        return None
    started, _, _, ended, ipv4, _, ipv6, _ = state
    return (started, ended, ipv4, ipv6)
