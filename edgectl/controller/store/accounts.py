"""An account as abuse staff see it: its session, its current holds, its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.compile import hex_of, hex_range
from edgectl.controller.store import history as intervals
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store
from edgectl.controller.store.holds import exemption_public, quarantine_public, select_hold
from edgectl.controller.store.subscribers import account_id, session_public
from edgectl.model import Prefix


def account_view(store: Store, ref: str, *, history: bool) -> dict[str, Any]:
    """The session and the active holds, or with ``history`` every hold ever, newest first."""
    view: dict[str, Any] = {"account": ref}
    with store.read() as connection:
        account = account_id(connection, ref)
        session = connection.execute(
            sa.select(t.sessions).where(t.sessions.c.account_id == account)
        ).first()
        view["session"] = session_public(session)
        if history:
            view["sessions"] = intervals.account_intervals(connection, account)
            view["notices"] = notice_log(connection, account)
        for table, public, name in (
            (t.quarantines, quarantine_public, "quarantine"),
            (t.exemptions, exemption_public, "exemption"),
        ):
            query = select_hold(table).where(table.c.account_id == account)
            if not history:
                query = query.where(table.c.active)
            found = [public(row) for row in connection.execute(query.order_by(table.c.id.desc()))]
            if history:
                view[f"{name}s"] = found
            else:
                view[name] = found[0] if found else None
    return view


def holders(store: Store, address: Prefix, limit: int = 100) -> list[dict[str, Any]]:
    """Who holds ``address`` now: the first question about an abuse report's source IP.

    IPv4: the account bound to that address.  IPv6: accounts whose delegated
    prefix contains it, or lies inside it (a report may name a /64 or a /48).
    Delegations are at least a /32 (the model's bound), which bounds the scan.
    """
    s = t.sessions
    query = sa.select(s, t.accounts.c.ref).join(t.accounts, t.accounts.c.id == s.c.account_id)
    if address.version == 4:
        query = query.where(s.c.ipv4_hex.between(*hex_range(address)))
    else:
        low = hex_of(address.supernet(min(32, address.length)))
        query = query.where(s.c.ipv6_hex.between(low, hex_range(address)[1]))
    found = []
    with store.read() as connection:
        for row in connection.execute(query.order_by(s.c.ipv4_hex, s.c.ipv6_hex)):
            bound = row.ipv4 if address.version == 4 else row.ipv6
            if bound is None:
                continue
            prefix = Prefix.parse(bound)
            if prefix.overlaps(address):
                since = intervals.open_intervals(connection, row.account_id, [bound]).get(bound)
                interval = None
                if since is not None:
                    interval = {
                        "address": bound,
                        "started": since.started.isoformat(),
                        "ended": None,
                        "source": since.source,
                        "session_id": since.session_id,
                    }
                found.append(
                    {"account": row.ref, "session": session_public(row), "interval": interval}
                )
                if len(found) == limit:
                    break
    return found


def holder_at(store: Store, address: Prefix, at: datetime) -> list[dict[str, Any]]:
    """Who held ``address`` at ``at``, from the session history (``history.holder_at``)."""
    with store.read() as connection:
        found = intervals.holder_at(connection, address, at, "query.address")
        if found is None:
            return []
        session = connection.execute(
            sa.select(t.sessions)
            .join(t.accounts, t.accounts.c.id == t.sessions.c.account_id)
            .where(t.accounts.c.ref == found["account"])
        ).first()
    interval = {k: found[k] for k in ("address", "started", "ended", "source", "session_id")}
    return [{"account": found["account"], "session": session_public(session), "interval": interval}]


NOTICE_LIMIT = 1000  # notice log entries an account's history shows, newest first


def notice_log(connection: Connection, account: int) -> list[dict[str, Any]]:
    """The notice portal's log for this account (notices shown, acknowledgements,
    self-releases), newest first."""
    n = t.portal_notices
    rows = connection.execute(
        sa.select(n)
        .where(n.c.account_id == account)
        .order_by(n.c.at.desc(), n.c.id.desc())
        .limit(NOTICE_LIMIT)
    )
    return [
        {
            "at": row.at.isoformat(),
            "kind": row.kind,
            "quarantine": row.quarantine_id,
            "address": row.address,
            "language": row.language,
            "host": row.host,
            "grace_until": None if row.grace_until is None else row.grace_until.isoformat(),
        }
        for row in rows
    ]
