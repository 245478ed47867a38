"""A session feed's events and their outcomes: the store's input, the RADIUS codec's output.

A module of its own, importing no store, so the RADIUS worker process
(``radius/worker.py``) builds events without loading the database layer
(SQLAlchemy, Alembic: seconds of start-up on a busy machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from edgectl.model import Prefix


class AccountingEvent(NamedTuple):
    """One session event.  A NamedTuple, not a frozen dataclass: the controller
    builds one per RADIUS packet from the worker's tuples, and a frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field) was most
    of that, on the thread that shares the interpreter lock with the committer."""

    source: str  # NAS name from the clients file ("api:<actor>" for REST)
    kind: Literal["start", "interim", "stop", "on", "off"]
    at: datetime  # Event-Timestamp, else arrival; tz-aware UTC
    session_id: str | None  # Acct-Session-Id; None for on/off
    account: str | None  # None for on/off
    ipv4: Prefix | None = None  # host /32 (Framed-IP-Address)
    ipv6: Prefix | None = None  # delegated prefix (Delegated-IPv6-Prefix / Framed-IPv6-Prefix)
    # Acct-Session-Time (seconds) of an Interim or Stop: the session began that
    # long before ``at``, which dates a session whose Start never arrived.
    session_time: int | None = None


@dataclass(frozen=True, slots=True)
class EventOutcome:
    status: Literal["applied", "ignored", "unpooled", "invalid"]
    detail: str = ""


# The outcome of most events, shared (it is immutable): one object a batch, not one an event.
APPLIED = EventOutcome("applied")
