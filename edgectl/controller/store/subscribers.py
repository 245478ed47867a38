"""Accounts and sessions: the feed binding an account to its current addresses.

A quarantine follows the account, so every binding change marks the old and
new addresses for recompiling, but only when a hold could be affected: a
subscriber with no hold moving address touches no gateway.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from edgectl.controller.compile import Topology, delegation_problem, hex_of
from edgectl.controller.errors import Invalid, NotFound
from edgectl.controller.store import history, loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store
from edgectl.controller.store.db import insert_rows, time_param
from edgectl.model import Prefix


@dataclass(frozen=True, slots=True)
class Binding:
    account: str
    ipv4: Prefix | None = None
    ipv6: Prefix | None = None

    def addresses(self) -> list[Prefix]:
        return [a for a in (self.ipv4, self.ipv6) if a is not None]


def check_binding(topology: Topology, binding: Binding, path: str) -> None:
    if binding.ipv4 is not None and (binding.ipv4.version != 4 or not binding.ipv4.is_host):
        raise Invalid(f"{path}ipv4", "expected one IPv4 address")
    if binding.ipv6 is not None:
        problem = delegation_problem(topology, binding.ipv6)
        if problem is not None:
            raise Invalid(f"{path}ipv6", problem)


def ensure_accounts(change: Change, refs: Iterable[str]) -> dict[str, int]:
    """Account ids by reference, creating the accounts not seen before."""
    known = change.account_ids
    wanted = set(refs)
    unknown = sorted(wanted - known.keys())
    if unknown:
        connection = change.connection
        query = sa.select(t.accounts.c.ref, t.accounts.c.id)
        known.update(loaders.rows_in(connection, query, t.accounts.c.ref, unknown))
        missing = [ref for ref in unknown if ref not in known]
        if missing:
            postgres = connection.dialect.name == "postgresql"
            params = {"refs": missing if postgres else json.dumps(missing), "at": change.at}
            created = connection.execute(_create_accounts(connection.dialect.name), params)
            known.update((ref, ident) for ref, ident in created)
    return {ref: known[ref] for ref in wanted}


@functools.cache
def _create_accounts(dialect: str) -> Any:
    """INSERT the refs (one parameter, a list) ... RETURNING (ref, id): one statement
    where inserting and reading the new ids back were two (built once per dialect)."""
    if dialect == "postgresql":
        param = sa.bindparam("refs", type_=postgresql.ARRAY(sa.String))
        values = sa.func.unnest(param).table_valued("value").render_derived(name="v")
    else:
        values = sa.func.json_each(sa.bindparam("refs")).table_valued("value").alias("v")
    chosen = sa.select(values.c.value, sa.bindparam("at", type_=t.Instant()))
    return (
        sa.insert(t.accounts)
        .from_select(["ref", "created_at"], chosen)
        .returning(t.accounts.c.ref, t.accounts.c.id)
    )


def account_id(connection: Connection, ref: str) -> int:
    found = connection.execute(sa.select(t.accounts.c.id).where(t.accounts.c.ref == ref)).first()
    if found is None:
        raise NotFound(f"no account {ref!r}")
    return int(found.id)


def session_addresses(connection: Connection, account: int) -> list[Prefix]:
    row = connection.execute(
        sa.select(t.sessions.c.ipv4, t.sessions.c.ipv6).where(t.sessions.c.account_id == account)
    ).first()
    if row is None:
        return []
    return [Prefix.parse(text) for text in (row.ipv4, row.ipv6) if text is not None]


def _held(connection: Connection, accounts: Sequence[int]) -> set[int]:
    held: set[int] = set()
    for table in (t.quarantines, t.exemptions):
        query = sa.select(table.c.account_id).where(table.c.active)
        held.update(
            row.account_id
            for row in loaders.rows_in(connection, query, table.c.account_id, accounts)
        )
    return held


def _prefix_holds_exist(connection: Connection) -> bool:
    q = t.quarantines
    row = connection.execute(
        # ix_quarantine_prefix_holds: every session upsert asks this.
        sa.select(q.c.id).where(t.active(q), q.c.prefix.is_not(None)).order_by(q.c.id).limit(1)
    ).first()
    return row is not None


@dataclass(frozen=True, slots=True)
class Holders:
    """Whom ``sessions`` binds each of ``hexes`` to now (by IP version), as a
    caller read it earlier in the same transaction."""

    hexes: dict[int, set[str]]
    accounts: dict[int, dict[str, int]]


def _displaced(
    connection: Connection, version: int, owners: dict[str, int], holders: Holders | None
) -> list[tuple[int, str]]:
    """(account, hex) of other accounts holding addresses now bound elsewhere."""
    column = t.sessions.c.ipv4_hex if version == 4 else t.sessions.c.ipv6_hex
    known: dict[str, int] = {}
    unread = sorted(owners)
    if holders is not None:
        covered = holders.hexes[version]
        held = holders.accounts[version]
        known = {value: held[value] for value in unread if value in held}
        unread = [value for value in unread if value not in covered]
    query = sa.select(column, t.sessions.c.account_id)
    known.update(loaders.rows_in(connection, query, column, unread))
    return [(account, value) for value, account in known.items() if owners[value] != account]


def _check(topology: Topology, bindings: Sequence[Binding], path: str) -> None:
    """Each binding valid, no account or address given twice (``path`` names the first)."""
    for index, binding in enumerate(bindings):
        ipv4 = binding.ipv4
        if binding.ipv6 is not None or (
            ipv4 is not None and (ipv4.version != 4 or not ipv4.is_host)
        ):
            check_binding(topology, binding, f"{path}[{index}]." if path else "")
    v4 = [b.ipv4 for b in bindings if b.ipv4 is not None]
    v6 = [b.ipv6 for b in bindings if b.ipv6 is not None]
    if (
        len({b.account for b in bindings}) == len(bindings)
        and len(set(v4)) == len(v4)
        and len(set(v6)) == len(v6)
    ):
        return  # the common case: no duplicate to find the first of
    seen: dict[object, int] = {}
    for index, binding in enumerate(bindings):
        where = f"{path}[{index}]." if path else ""
        for label, value in (
            ("account", binding.account),
            ("ipv4", binding.ipv4),
            ("ipv6", binding.ipv6),
        ):
            if value is None:
                continue
            marker = (label, value)
            if marker in seen:
                raise Invalid(f"{where}{label}", f"also given in {path}[{seen[marker]}]")
            seen[marker] = index


def bind(
    change: Change,
    bindings: Sequence[Binding],
    path: str = "bindings",
    old: dict[int, tuple[str | None, str | None]] | None = None,
    holders: Holders | None = None,
) -> dict[str, int]:
    """Replace each account's addresses; returns counts for the audit record.

    ``old``: the ``sessions`` rows (ipv4, ipv6 text) of at least these
    accounts, and ``holders``: of some addresses, if the caller has just read
    them in this transaction.
    """
    return _bind(change, bindings, path, old, holders)[0]


def _bind(
    change: Change,
    bindings: Sequence[Binding],
    path: str,
    old: dict[int, tuple[str | None, str | None]] | None = None,
    holders: Holders | None = None,
) -> tuple[dict[str, int], list[history.Bound]]:
    """``bind``, and each binding as the history records it."""
    connection = change.connection
    _, topology = loaders.view(change)
    _check(topology, bindings, path)
    ids = ensure_accounts(change, (b.account for b in bindings))
    accounts = [ids[b.account] for b in bindings]
    # Old bindings stay text until one turns out to matter (a held account moved).
    if old is None:
        old = {}
        query = sa.select(t.sessions.c.account_id, t.sessions.c.ipv4, t.sessions.c.ipv6)
        for account, ipv4, ipv6 in loaders.rows_in(
            connection, query, t.sessions.c.account_id, accounts
        ):
            old[account] = (ipv4, ipv6)
    at = time_param(connection, change.at)
    # Each address's text and hex once: the upsert, the owners and the moves use them.
    rows = [
        (
            account,
            None if b.ipv4 is None else str(b.ipv4),
            None if b.ipv4 is None else hex_of(b.ipv4),
            None if b.ipv6 is None else str(b.ipv6),
            None if b.ipv6 is None else hex_of(b.ipv6),
            at,
        )
        for account, b in zip(accounts, bindings, strict=True)
    ]
    v4_owner = {row[2]: row[0] for row in rows if row[2] is not None}
    v6_owner = {row[4]: row[0] for row in rows if row[4] is not None}
    displaced = [
        *((a, "ipv4", h) for a, h in _displaced(connection, 4, v4_owner, holders)),
        *((a, "ipv6", h) for a, h in _displaced(connection, 6, v6_owner, holders)),
    ]
    for account, family, _ in displaced:
        # The address went to someone else (RADIUS missed a stop): unbind the old holder.
        connection.execute(
            sa.update(t.sessions)
            .where(t.sessions.c.account_id == account)
            .values({family: None, f"{family}_hex": None, "updated_at": change.at})
        )
    moved = [
        binding
        for binding, row in zip(bindings, rows, strict=True)
        if old.get(row[0], (None, None)) != (row[1], row[3])
    ]
    columns = ("account_id", "ipv4", "ipv4_hex", "ipv6", "ipv6_hex", "updated_at")
    insert_rows(connection, t.sessions, columns, rows, conflict=columns[:1], update=columns[1:])
    everyone = _prefix_holds_exist(connection)
    # With a prefix hold every move recompiles anyway: who is held does not matter.
    held = (
        set() if everyone else _held(connection, sorted({*accounts, *(a for a, _, _ in displaced)}))
    )
    for binding in moved:
        account = ids[binding.account]
        if everyone or account in held:
            change.addresses.update(Prefix.parse(a) for a in old.get(account, ()) if a is not None)
            change.addresses.update(binding.addresses())
    for account, family, value in displaced:
        if everyone or account in held:
            bits = 32 if family == "ipv4" else 128
            prefix = Prefix(4 if family == "ipv4" else 6, int(value, 16), bits)
            change.addresses.add(prefix)  # the key is the same; its holder changed
    counts = {"bindings": len(bindings), "moved": len(moved), "displaced": len(displaced)}
    return counts, [row[:5] for row in rows]


def bind_many(store: Store, actor: str, bindings: Sequence[Binding]) -> dict[str, int]:
    with store.write(actor) as change:
        counts, bound = _bind(change, bindings, "bindings")
        history.record_bindings(change, bound)
        # One record a batch: a RADIUS relay sends millions of bindings a day,
        # and the sessions table itself says who holds what now.
        change.audit("session.bulk_upsert", "sessions", "bulk", None, counts)
    return counts


def session_public(row: Any) -> dict[str, Any] | None:
    if row is None or (row.ipv4 is None and row.ipv6 is None):
        return None
    return {"ipv4": row.ipv4, "ipv6": row.ipv6, "updated_at": row.updated_at.isoformat()}


def _session_row(connection: Connection, account: int) -> Any:
    return connection.execute(
        sa.select(t.sessions).where(t.sessions.c.account_id == account)
    ).first()


def start_session(store: Store, actor: str, binding: Binding) -> dict[str, Any] | None:
    with store.write(actor) as change:
        ids = ensure_accounts(change, [binding.account])
        before = session_public(_session_row(change.connection, ids[binding.account]))
        _, bound = _bind(change, [binding], "")
        history.record_bindings(change, bound)
        after = session_public(_session_row(change.connection, ids[binding.account]))
        change.audit("session.start", "account", binding.account, before, after)
    return after


def stop_session(store: Store, actor: str, ref: str) -> None:
    with store.write(actor) as change:
        account = account_id(change.connection, ref)
        row = _session_row(change.connection, account)
        before = session_public(row)
        if before is None:
            raise NotFound(f"account {ref!r} has no session")
        addresses = session_addresses(change.connection, account)
        change.connection.execute(
            sa.update(t.sessions)
            .where(t.sessions.c.account_id == account)
            .values(ipv4=None, ipv4_hex=None, ipv6=None, ipv6_hex=None, updated_at=change.at)
        )
        history.record_bindings(change, [(account, None, None, None, None)])
        # Stopping a session lifts nothing: the hold waits for the next address.
        change.addresses.update(addresses)
        change.audit("session.stop", "account", ref, before, None)
