"""The notice portal's side of the store: holds by address, the notice log,
one-time codes and self-release with its limits.

Every rule is checked here, in the transaction that acts on it, not in the
portal process: a portal token in the wrong hands can still only do what a
subscriber at that address could do from the page.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.errors import Conflict, Invalid, NotFound
from edgectl.controller.store import accounts
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store, now
from edgectl.controller.store.holds import end_hold, select_hold, self_release_of
from edgectl.controller.store.subscribers import session_addresses
from edgectl.model import Prefix

n = t.portal_notices
q = t.quarantines

# No 0/O, 1/I/L: the subscriber copies the code from the page by eye.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
RELEASE_REASON = "self-release from the notice portal"


@dataclass(frozen=True, slots=True)
class Limits:
    releases: int = 3
    window: timedelta = timedelta(days=30)
    grace: timedelta = timedelta(hours=24)
    code_ttl: timedelta = timedelta(minutes=15)


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _releases_since(connection: Connection, account: int, since: datetime) -> int:
    return int(
        connection.execute(
            sa.select(sa.func.count())
            .select_from(n)
            .where(n.c.account_id == account, n.c.kind == "released", n.c.at > since)
        ).scalar_one()
    )


def _view(connection: Connection, row: Any, limits: Limits, at: datetime) -> dict[str, Any]:
    used = _releases_since(connection, row.account_id, at - limits.window)
    acknowledged = connection.execute(
        sa.select(sa.func.max(n.c.at)).where(
            n.c.quarantine_id == row.id, n.c.kind == "acknowledged"
        )
    ).scalar()
    return {
        "id": row.id,
        "account": row.ref,
        "mode": row.mode,
        "category": row.category,
        "ticket": row.ticket,
        "created_at": _iso(row.created_at),
        "expires_at": _iso(row.expires_at),
        "self_release": self_release_of(row),
        "releases_used": used,
        "releases_left": max(0, limits.releases - used),
        "window_days": limits.window.days,
        "acknowledged_at": _iso(acknowledged),
    }


def hold_for(store: Store, address: Prefix, limits: Limits) -> dict[str, Any]:
    """The active hold of the account that holds ``address`` now; NotFound if none."""
    found = accounts.holders(store, address, limit=2)
    if len(found) != 1:
        raise NotFound(f"nobody holds {address} now" if not found else f"{address} is ambiguous")
    ref = found[0]["account"]
    with store.read() as connection:
        row = connection.execute(select_hold(q).where(t.accounts.c.ref == ref, q.c.active)).first()
        if row is None:
            raise NotFound(f"account {ref!r} is not held")
        return _view(connection, row, limits, now())


def _active_for(connection: Connection, ident: int, address: Prefix) -> Any:
    """The active hold ``ident``, if the account holding it holds ``address`` now.

    The portal acts for the subscriber behind the request's source address:
    a notice or a release for someone else's hold is refused.
    """
    row = connection.execute(select_hold(q).where(q.c.id == ident)).first()
    if row is None or row.account_id is None:
        raise NotFound(f"no account hold {ident}")
    if not row.active:
        raise Conflict(f"hold {ident} is no longer active")
    held = session_addresses(connection, row.account_id)
    if not any(p.contains(address) or address.contains(p) for p in held):
        raise Invalid("address", f"{address} is not held by the account of hold {ident}")
    return row


def record_shown(
    store: Store,
    ident: int,
    address: Prefix,
    language: str | None,
    host: str | None,
    limits: Limits,
) -> dict[str, Any]:
    """Log a notice shown, and mint the one-time code the page displays."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    at = now()
    # The notice log changes no gateway: no sequence number, no recompile.
    with store.database.write() as connection:
        row = _active_for(connection, ident, address)
        notice = connection.execute(
            sa.insert(n)
            .values(
                account_id=row.account_id,
                quarantine_id=ident,
                kind="shown",
                at=at,
                address=str(address),
                language=language,
                host=host,
                code_hash=_hash(code),
                code_expires=at + limits.code_ttl,
            )
            .returning(n.c.id)
        ).scalar_one()
    return {"notice": notice, "code": code, "code_expires_at": at + limits.code_ttl}


def acknowledge(
    store: Store, ident: int, address: Prefix, code: str, release: bool, limits: Limits
) -> dict[str, Any]:
    """The subscriber read the notice (and, with ``release``, lifts the hold).

    The code must be one this hold's notice showed, unused and unexpired: a
    bot's blind POST, which never rendered the page, has none.  All or
    nothing: a refused release records no acknowledgement and spends no code.
    """
    with store.read() as connection:
        first = connection.execute(select_hold(q).where(q.c.id == ident)).first()
    if first is None or first.ref is None:
        raise NotFound(f"no account hold {ident}")
    with store.write(f"subscriber:{first.ref}") as change:
        connection = change.connection
        row = _active_for(connection, ident, address)
        shown = connection.execute(
            sa.select(n.c.id).where(
                n.c.quarantine_id == ident,
                n.c.code_hash == _hash(code.strip().upper()),
                n.c.kind == "shown",
                n.c.code_expires > change.at,
            )
        ).first()
        if shown is None:
            raise Invalid("code", "not the code shown on the notice, or it has expired")
        connection.execute(sa.update(n).where(n.c.id == shown.id).values(code_expires=None))
        base = {"account_id": row.account_id, "quarantine_id": ident, "address": str(address)}
        connection.execute(sa.insert(n).values(kind="acknowledged", at=change.at, **base))
        released = False
        if release:
            if not self_release_of(row):
                raise Conflict("this hold cannot be released from the portal: contact support")
            used = _releases_since(connection, row.account_id, change.at - limits.window)
            if used >= limits.releases:
                raise Conflict(
                    f"self-release limit reached: {used} in the last {limits.window.days} days"
                )
            end_hold(change, q, row, RELEASE_REASON, "quarantine")
            grace_key = f"category:{row.category}" if row.category else f"reason:{row.reason}"
            connection.execute(
                sa.insert(n).values(
                    kind="released",
                    at=change.at,
                    grace_key=grace_key,
                    grace_until=change.at + limits.grace,
                    **base,
                )
            )
            released = True
        used = _releases_since(connection, row.account_id, change.at - limits.window)
    return {
        "acknowledged": True,
        "released": released,
        "releases_left": max(0, limits.releases - used),
    }
