"""Web console sessions: sign-in exchanges an API token for one of these.

The cookie holds a random 256-bit id; the table holds its SHA-256 (a leaked
database signs nobody in) and the SHA-256 of the API token it came from,
never the token.  Each request re-checks that token (``deps.verify``), so a
revoked token ends its sessions at its next request.

These rows are not policy: they change nothing a gateway enforces.  Sign-in
and sign-out go through ``Store.write`` for their audit entries
(``console.signin``/``console.signout``, object ``console_session`` and the
first 12 hex digits of the id's hash, which pair them up and reveal nothing);
the frequent writes (touch, timeouts, purge) use ``Database.write`` directly,
with no sequence number or audit entry.
``last_seen`` is rewritten at most every ``TOUCH_EVERY`` seconds, so reading
pages does not queue a write behind every quarantine.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store, now

TOUCH_EVERY = 30.0  # seconds; the idle timeout is this much coarse at worst


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    id_hash: str
    token_hash: str
    csrf: str
    created_at: datetime
    last_seen: datetime


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()


def create(store: Store, token_hash: str, actor: str, role: str) -> tuple[str, ConsoleSession]:
    """A new session for ``actor``'s token (``token_hash``): (cookie value, session)."""
    session_id = secrets.token_urlsafe(32)
    id_hash = _digest(session_id)
    with store.write(actor) as change:
        session = ConsoleSession(
            id_hash, token_hash, secrets.token_urlsafe(32), change.at, change.at
        )
        change.connection.execute(
            sa.insert(t.console_sessions).values(
                id_hash=session.id_hash,
                token_hash=token_hash,
                csrf=session.csrf,
                created_at=change.at,
                last_seen=change.at,
            )
        )
        change.audit("console.signin", "console_session", id_hash[:12], None, {"role": role})
    return session_id, session


def find(store: Store, session_id: str, idle: float, absolute: float) -> ConsoleSession | None:
    """The live session with this cookie value, touched; None (and gone) if it timed out."""
    if not session_id or len(session_id) > 100:
        return None
    id_hash = _digest(session_id)
    c = t.console_sessions.c
    with store.read() as connection:
        row = connection.execute(sa.select(t.console_sessions).where(c.id_hash == id_hash)).first()
    if row is None:
        return None
    at = now()
    if at - row.last_seen > timedelta(seconds=idle) or at - row.created_at > timedelta(
        seconds=absolute
    ):
        end(store, session_id)
        return None
    if (at - row.last_seen).total_seconds() >= TOUCH_EVERY:
        with store.database.write() as connection:
            connection.execute(
                sa.update(t.console_sessions).where(c.id_hash == id_hash).values(last_seen=at)
            )
    return ConsoleSession(row.id_hash, row.token_hash, row.csrf, row.created_at, at)


def end(store: Store, session_id: str) -> None:
    """Delete the session (timed out, or its token gone); not audited."""
    with store.database.write() as connection:
        connection.execute(
            sa.delete(t.console_sessions).where(t.console_sessions.c.id_hash == _digest(session_id))
        )


def sign_out(store: Store, session_id: str, actor: str) -> None:
    id_hash = _digest(session_id)
    with store.write(actor) as change:
        change.connection.execute(
            sa.delete(t.console_sessions).where(t.console_sessions.c.id_hash == id_hash)
        )
        change.audit("console.signout", "console_session", id_hash[:12], None, None)


def purge(store: Store, idle: float, absolute: float) -> int:
    """Delete timed-out sessions (the sweeper's job: abandoned tabs never come back)."""
    at = now()
    c = t.console_sessions.c
    with store.database.write() as connection:
        result = connection.execute(
            sa.delete(t.console_sessions).where(
                sa.or_(
                    c.last_seen < at - timedelta(seconds=idle),
                    c.created_at < at - timedelta(seconds=absolute),
                )
            )
        )
    return int(result.rowcount or 0)
