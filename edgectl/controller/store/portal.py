"""The notice portal's side of the store: holds by address, the notice log,
one-time codes and self-release with its limits.

Every rule is checked here, in the transaction that acts on it, not in the
portal process: a portal token in the wrong hands can still only do what a
subscriber at that address could do from the page.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.compile import hex_of
from edgectl.controller.errors import Conflict, Invalid, NotFound
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store, now
from edgectl.controller.store.history import V6_LENGTHS
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


def _view(row: Any, limits: Limits) -> dict[str, Any]:
    """The portal's view of a hold row from ``_held_by`` (which counted the releases)."""
    used = int(row.releases_used)
    return {
        "id": row.id,
        "account": row.ref,
        "mode": row.mode,
        "category": row.category,
        "ticket": row.ticket,
        "created_at": _iso(row.created_at),
        "expires_at": _iso(row.expires_at),
        # A hold on an address, not an account: support lifts it (the
        # release limits count per account).
        "self_release": row.account_id is not None and self_release_of(row),
        "releases_used": used,
        "releases_left": max(0, limits.releases - used),
        "window_days": limits.window.days,
        "acknowledged_at": _iso(row.acknowledged_at),
    }


def _candidates(address: Prefix) -> list[str]:
    """Session hex keys that may hold ``address``: itself (IPv4), or the network
    address of every delegation length that could contain it (IPv6, /32../64)."""
    if address.version == 4:
        return [hex_of(address)]
    return sorted({hex_of(address.supernet(length)) for length in V6_LENGTHS})


def _held_by(
    connection: Connection, addresses: Sequence[Prefix], limits: Limits, at: datetime
) -> dict[Prefix, Any]:
    """The active hold of whoever holds each address now (absent: none), with the
    account's recent self-releases and the hold's last acknowledgement, which
    the page shows: one indexed query per address family, however many
    addresses (a batch of notices is one lookup, not one each)."""
    s = t.sessions
    released = (
        sa.select(sa.func.count())
        .select_from(n)
        .where(
            n.c.account_id == q.c.account_id,
            n.c.kind == "released",
            n.c.at > at - limits.window,
        )
        .scalar_subquery()
    )
    acknowledged = (
        sa.select(sa.func.max(n.c.at))
        .where(n.c.quarantine_id == q.c.id, n.c.kind == "acknowledged")
        .scalar_subquery()
    )
    found: dict[Prefix, Any] = {}
    for version in (4, 6):
        wanted = {
            address: _candidates(address) for address in addresses if address.version == version
        }
        if not wanted:
            continue
        column = s.c.ipv4_hex if version == 4 else s.c.ipv6_hex
        bound = s.c.ipv4 if version == 4 else s.c.ipv6
        query = (
            select_hold(q)
            .add_columns(
                column.label("key"),
                bound.label("bound"),
                released.label("releases_used"),
                acknowledged.label("acknowledged_at"),
            )
            .join(s, s.c.account_id == q.c.account_id)
            .where(
                column.in_(sorted({key for keys in wanted.values() for key in keys})), q.c.active
            )
            .order_by(q.c.id)
        )
        by_key: dict[str, list[Any]] = {}
        for row in connection.execute(query):
            by_key.setdefault(row.key, []).append(row)
        for address, keys in wanted.items():
            for key in keys:
                # IPv6: hex keys drop the length, so a /56 and a /64 at the same
                # network address look alike here; the prefix decides.
                rows = by_key.get(key, [])
                matching = [r for r in rows if Prefix.parse(r.bound).contains(address)]
                if matching:
                    found[address] = matching[0]
                    break
    rest = [address for address in addresses if address not in found]
    if rest:
        found.update(_prefix_held(connection, rest, acknowledged))
    return found


def _prefix_held(
    connection: Connection, addresses: Sequence[Prefix], acknowledged: Any
) -> dict[Prefix, Any]:
    """Holds placed on an address, not an account (``prefix``: one subscriber
    key, e.g. a static line without sessions): by the key's hex, indexed.
    No account, so no self-release and no release count."""
    wanted = {address: _candidates(address) for address in addresses}
    query = (
        select_hold(q)
        .add_columns(
            q.c.prefix_hex.label("key"),
            q.c.prefix.label("bound"),
            sa.literal(0).label("releases_used"),
            acknowledged.label("acknowledged_at"),
        )
        .where(
            q.c.prefix_hex.in_(sorted({key for keys in wanted.values() for key in keys})),
            q.c.account_id.is_(None),
            q.c.active,
        )
        .order_by(q.c.id)
    )
    rows = list(connection.execute(query))
    found = {}
    for address in addresses:
        matching = [r for r in rows if Prefix.parse(r.bound).contains(address)]
        if matching:
            found[address] = matching[0]
    return found


def hold_for(store: Store, address: Prefix, limits: Limits) -> dict[str, Any]:
    """The active hold of the account that holds ``address`` now; NotFound if none."""
    with store.read() as connection:
        row = _held_by(connection, [address], limits, now()).get(address)
        if row is None:
            raise NotFound(f"{address} is not held")
        return _view(row, limits)


@dataclass(frozen=True, slots=True)
class Shown:
    address: Prefix
    language: str | None = None
    host: str | None = None
    # The subscriber asked for the whole notice again (the reminder's link):
    # a code, even though the hold is acknowledged.
    full: bool = False


def record_shown(
    store: Store, requests: Sequence[Shown], limits: Limits
) -> list[dict[str, Any] | NotFound]:
    """Log notices shown, each with the hold it was for and a new one-time code.

    Once the subscriber has acknowledged a hold, its pages are reminders
    (RFC 6108: acknowledgement stops further immediate notices): logged as
    ``reminded``, without a code, unless the request asks for the ``full``
    notice again (to release the hold from it).

    Many in one transaction: after a botnet takedown hundreds of subscribers
    open pages a second, and a commit (an fsync) each would cap the portal
    at what the disk syncs.  The notice log changes no gateway: no sequence
    number, no recompile.
    """
    at = now()
    answers: list[dict[str, Any] | NotFound] = []
    rows = []
    with store.database.write() as connection:
        held = _held_by(connection, [request.address for request in requests], limits, at)
        for request in requests:
            row = held.get(request.address)
            if row is None:
                answers.append(NotFound(f"{request.address} is not held"))
                continue
            entry = {
                "account_id": row.account_id,
                "quarantine_id": row.id,
                "at": at,
                "address": str(request.address),
                "language": request.language,
                "host": request.host,
            }
            answer: dict[str, Any] = {"hold": _view(row, limits), "reminder": False}
            if row.acknowledged_at is not None and not request.full:
                entry.update(kind="reminded", code_hash=None, code_expires=None)
                answer.update(reminder=True, code=None, code_expires_at=None)
            else:
                code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
                expires = at + limits.code_ttl
                entry.update(kind="shown", code_hash=_hash(code), code_expires=expires)
                answer.update(code=code, code_expires_at=expires)
            rows.append(entry)
            answers.append(answer)
        if rows:
            connection.execute(sa.insert(n), rows)
    return answers


def _active_for(connection: Connection, ident: int, address: Prefix) -> Any:
    """The active hold ``ident``, if the account holding it holds ``address`` now.

    The portal acts for the subscriber behind the request's source address:
    an acknowledgement or a release of someone else's hold is refused.
    """
    row = connection.execute(select_hold(q).where(q.c.id == ident)).first()
    if row is None or (row.account_id is None and row.prefix is None):
        raise NotFound(f"no hold {ident}")
    if not row.active:
        raise Conflict(f"hold {ident} is no longer active")
    if row.account_id is None:
        held = [Prefix.parse(row.prefix)]
    else:
        held = session_addresses(connection, row.account_id)
    if not any(p.contains(address) or address.contains(p) for p in held):
        raise Invalid("address", f"{address} is not held by hold {ident}")
    return row


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
    if first is None or (first.ref is None and first.prefix is None):
        raise NotFound(f"no hold {ident}")
    # A hold on an address acts for whoever is at it: the address names them.
    with store.write(f"subscriber:{first.ref or address}") as change:
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
            if row.account_id is None or not self_release_of(row):
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
        used = (
            0
            if row.account_id is None
            else _releases_since(connection, row.account_id, change.at - limits.window)
        )
    return {
        "acknowledged": True,
        "released": released,
        "releases_left": max(0, limits.releases - used),
    }
