"""The accounting feed: session events (RADIUS Start, Interim-Update, Stop,
Accounting-On/Off) into the session history and the current binding.

Order does not matter.  Each session (source, Acct-Session-Id, account) is
one history row whose fields are each a fold over its events that gives
the same value in any order:

- ``started``: the earliest of its events' times (less Acct-Session-Time
  where the event has one), so an Interim whose Start was missed opens the
  session and a Stop without a Start records a closed interval;
- ``stopped``: the earliest Stop;
- ``ended``: the earlier of ``stopped`` and the first restart (Accounting-On
  or -Off) of its NAS after ``started``; restarts are kept
  (``nas_restarts``), so a Start that arrives after the restart it predates
  still ends there;
- ``last_seen``: the latest event, never past ``ended``: an Interim after its
  Stop changes nothing and never re-opens the session;
- each address: the one carried by the earliest event that carried one (a
  Delegated-IPv6-Prefix first sent in an Interim still counts; a late packet
  never rewrites what a closed session held).

The current binding is then derived from the history (``current.follow``),
and so is the same for any permutation of the same events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from edgectl.controller.accounting import APPLIED
from edgectl.controller.accounting import AccountingEvent as AccountingEvent
from edgectl.controller.accounting import EventOutcome as EventOutcome
from edgectl.controller.compile import Topology, delegation_problem
from edgectl.controller.ids import ACCOUNT_RULE, is_account
from edgectl.controller.store import current, history, loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.change import Change
from edgectl.controller.store.core import Store
from edgectl.controller.store.core import now as clock
from edgectl.controller.store.db import insert_rows, time_param
from edgectl.controller.store.feed_session import UPDATED, FeedSession, binding_fields
from edgectl.controller.store.subscribers import ensure_accounts

h = t.session_history

FEED_ACTOR = "feed"
STALE_ACTOR = "system:stale"
SESSION_KINDS = frozenset({"start", "interim", "stop"})
RESTART_KINDS = frozenset({"on", "off"})
MAX_SESSION_TIME = 10 * 366 * 86_400  # Acct-Session-Time is 32 bits; a decade is already absurd
STALE_BATCH = 50_000  # sessions a stale sweep unbinds in one transaction


def _text_problem(name: str, value: object, longest: int) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{name} is missing"
    if len(value) > longest or not value.isprintable():
        return f"{name} must be 1-{longest} printable characters"
    return None


def _problem(event: AccountingEvent) -> str | None:
    """What is wrong with an event on its own (the pools are checked later)."""
    problem = _text_problem("source", event.source, 200)
    if problem is not None:
        return problem
    if event.kind not in SESSION_KINDS and event.kind not in RESTART_KINDS:
        return f"kind {event.kind!r} is none of start, interim, stop, on, off"
    if not isinstance(event.at, datetime) or event.at.tzinfo is None:
        return "at must be a time with a time zone"
    if not 2000 <= event.at.astimezone(UTC).year < 9000:
        return f"at {event.at.isoformat()} is out of range (years 2000-8999)"
    if event.kind in RESTART_KINDS:
        return None
    problem = _text_problem("session_id", event.session_id, 253)
    if problem is not None:
        return problem
    if not is_account(event.account):
        return f"account {event.account!r}: {ACCOUNT_RULE}"
    if event.session_time is not None and not 0 <= event.session_time <= MAX_SESSION_TIME:
        return f"session_time must be 0..{MAX_SESSION_TIME} seconds (ten years)"
    if event.ipv4 is not None and (event.ipv4.version != 4 or not event.ipv4.is_host):
        return f"ipv4 {event.ipv4} is not one IPv4 address"
    if event.ipv6 is not None and (
        event.ipv6.version != 6 or event.ipv6.length not in history.V6_LENGTHS
    ):
        return f"ipv6 {event.ipv6} is not a delegated IPv6 prefix (/32 to /64)"
    return None


def _unpooled(topology: Topology, event: AccountingEvent) -> list[str]:
    return [str(a) for a in (event.ipv4, event.ipv6) if a is not None and not topology.keyed(a)]


def _restarts(change: Change, sources: set[str], new: set[tuple[str, datetime]]) -> Any:
    """Every known restart of ``sources`` (sorted, by source), after storing ``new``;
    and which of ``new`` were not known before."""
    connection = change.connection
    r = t.nas_restarts
    known: dict[str, list[datetime]] = {source: [] for source in sources}
    query = sa.select(r.c.source, r.c.at)
    for source, at in loaders.rows_in(connection, query, r.c.source, sorted(sources)):
        known[source].append(at)
    fresh = sorted(pair for pair in new if pair[1] not in known[pair[0]])
    insert_rows(
        connection,
        r,
        ("source", "at"),
        [(source, time_param(connection, at)) for source, at in fresh],
    )
    for source, at in fresh:
        known[source].append(at)
    return {source: sorted(times) for source, times in known.items()}, fresh


def _end_at_restart(change: Change, source: str, at: datetime) -> list[Any]:
    """End the stored sessions of ``source`` that were running at ``at``; returns them."""
    connection = change.connection
    columns = (h.c.id, h.c.account_id, h.c.ipv4_hex, h.c.ipv6_hex)
    running = [
        *connection.execute(
            sa.select(*columns).where(t.open_interval(), h.c.source == source, h.c.started < at)
        ),
        # Closed later than the restart: whichever came first, it ended there.
        *connection.execute(
            sa.select(*columns).where(h.c.ended > at, h.c.source == source, h.c.started < at)
        ),
    ]
    if running:
        when = time_param(connection, at)
        mark = "?" if connection.dialect.name == "sqlite" else "%s"
        connection.exec_driver_sql(
            f"UPDATE session_history SET ended = {mark},"
            f" last_seen = CASE WHEN last_seen > {mark} THEN {mark} ELSE last_seen END"
            f" WHERE id = {mark}",
            [(when, when, when, row.id) for row in running],
        )
    return running


Key = tuple[str, str, int]  # source, Acct-Session-Id, account id


def _load(change: Change, keys: set[Key]) -> dict[Key, FeedSession]:
    query = sa.select(h).where(h.c.session_id.is_not(None))
    sessions = {}
    wanted = sorted({session_id for _, session_id, _ in keys})
    for row in loaders.rows_in(change.connection, query, h.c.session_id, wanted):
        key = (row.source, row.session_id, row.account_id)
        if key in keys:
            sessions[key] = FeedSession.stored(row)
    return sessions


Written = tuple[FeedSession, dict[int, str | None]]  # a session and its address hexes


def _write(change: Change, written: Sequence[Written], seen_only: Sequence[FeedSession]) -> None:
    """New rows, full updates, and the updates of ``last_seen`` alone.

    The last are a feed's steady state (Interim-Updates) and set that one
    column: SQLite rewrites the entries of every index on a column an UPDATE
    sets, whatever the value, and ``last_seen`` is in one index of seven.
    """
    connection = change.connection
    texts: dict[datetime, object] = {}
    history.insert(
        connection, [s.row(connection, hexes, texts) for s, hexes in written if s.id is None]
    )
    mark = "?" if connection.dialect.name == "sqlite" else "%s"
    updates = [(*s.row(connection, x, texts)[3:], s.id) for s, x in written if s.id]
    if updates:
        assignments = ", ".join(f"{name} = {mark}" for name in UPDATED)
        connection.exec_driver_sql(
            f"UPDATE session_history SET {assignments} WHERE id = {mark}", updates
        )
    if seen_only:
        connection.exec_driver_sql(
            f"UPDATE session_history SET last_seen = {mark} WHERE id = {mark}",
            [(time_param(connection, s.last_seen), s.id) for s in seen_only],
        )


def apply_events(store: Store, events: Sequence[AccountingEvent]) -> list[EventOutcome]:
    """All events in ONE write transaction (one audit record per batch), returns after
    commit, outcome per event in order.

    ``invalid`` events are left out and the rest commits; ``ignored`` ones
    changed nothing (a retransmission, an Interim after its Stop);
    ``unpooled`` ones were recorded but an address is in no subscriber pool,
    so no gateway holds a key for it.
    """
    outcomes: list[EventOutcome | None] = [None] * len(events)
    valid: list[tuple[int, AccountingEvent]] = []
    for index, event in enumerate(events):
        problem = _problem(event)
        if problem is not None:
            outcomes[index] = EventOutcome("invalid", problem)
        else:
            valid.append((index, _utc(event)))
    if valid:
        with store.write(FEED_ACTOR) as change:
            counts = _apply(change, valid, outcomes)
            tally = Counter[str](o.status for o in outcomes if o is not None)
            record: dict[str, int] = {"events": len(events), **tally, **counts}
            change.audit("session.feed", "sessions", "feed", None, record)
    return [o if o is not None else EventOutcome("invalid", "not processed") for o in outcomes]


def _utc(event: AccountingEvent) -> AccountingEvent:
    if event.at.utcoffset() == timedelta(0) and event.at.tzinfo is UTC:
        return event
    return AccountingEvent(
        event.source,
        event.kind,
        event.at.astimezone(UTC),
        event.session_id,
        event.account,
        event.ipv4,
        event.ipv6,
        event.session_time,
    )


def _apply(
    change: Change,
    valid: list[tuple[int, AccountingEvent]],
    outcomes: list[EventOutcome | None],
) -> dict[str, int]:
    _, topology = loaders.view(change)
    accepted: list[tuple[int, AccountingEvent]] = []
    for index, event in valid:
        if event.ipv6 is not None:
            problem = delegation_problem(topology, event.ipv6)
            if problem is not None:
                outcomes[index] = EventOutcome("invalid", f"ipv6: {problem}")
                continue
        accepted.append((index, event))
    ids = ensure_accounts(
        change, (e.account for _, e in accepted if e.kind in SESSION_KINDS and e.account)
    )
    restart_events = {(e.source, e.at) for _, e in accepted if e.kind in RESTART_KINDS}
    restarts, fresh = _restarts(change, {e.source for _, e in accepted}, restart_events)
    keys = {
        (e.source, e.session_id, ids[e.account])
        for _, e in accepted
        if e.kind in SESSION_KINDS and e.session_id is not None and e.account is not None
    }
    sessions = _load(change, keys)
    before = {key: s.state() for key, s in sessions.items()}
    fresh_set = set(fresh)
    for index, event in accepted:
        if event.kind in RESTART_KINDS:
            known = (event.source, event.at) in fresh_set
            fresh_set.discard((event.source, event.at))
            outcomes[index] = EventOutcome(
                "applied" if known else "ignored", "" if known else "restart already known"
            )
            continue
        assert event.session_id is not None and event.account is not None
        key = (event.source, event.session_id, ids[event.account])
        session = sessions.get(key)
        if session is None:
            session = sessions[key] = FeedSession(
                key[2], event.source, event.session_id, event.at, event.at
            )
            session.old_hexes = {4: None, 6: None}
            state = None
        else:
            state = session.state()
        session.fold(
            event.kind, event.at, event.session_time, event.ipv4, event.ipv6, restarts[event.source]
        )
        if state is not None and session.state() == state:
            outcomes[index] = EventOutcome("ignored", "changes nothing stored")
        elif unpooled := _unpooled(topology, event):
            outcomes[index] = EventOutcome("unpooled", f"in no subscriber pool: {unpooled}")
        else:
            outcomes[index] = APPLIED
    written: list[Written] = []
    seen_only: list[FeedSession] = []
    accounts: set[int] = set()
    hexes: dict[int, set[str]] = {4: set(), 6: set()}
    for key, session in sessions.items():
        session.settle(restarts[session.source])  # restarts of this batch, too
        old = before.get(key)
        state = session.state()
        if old == state:
            continue
        if old is not None and _only_last_seen(old, state):
            seen_only.append(session)
            continue
        written.append((session, session.hexes()))
        # Only what the binding is derived from: an Interim that moves last_seen
        # alone (the steady state of a feed) costs one UPDATE and no derivation.
        if old is None or binding_fields(old) != binding_fields(state):
            accounts.add(session.account_id)
            for version in (4, 6):
                for value in (session.old_hexes.get(version), written[-1][1][version]):
                    if value is not None:
                        hexes[version].add(value)
    _write(change, written, seen_only)
    ended = 0
    for source, at in fresh:
        for row in _end_at_restart(change, source, at):
            ended += 1
            accounts.add(row.account_id)
            for version, value in ((4, row.ipv4_hex), (6, row.ipv6_hex)):
                if value is not None:
                    hexes[version].add(value)
    counts = current.follow(change, accounts, hexes)
    dirty = len(written) + len(seen_only)
    return {"sessions_written": dirty, "ended_by_restart": ended, **counts}


def _only_last_seen(old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
    """Of two ``FeedSession.state()``s: does ``last_seen`` (index 1) alone differ?"""
    return old[0] == new[0] and old[2:] == new[2:]


def unbind_stale(store: Store, silent_for: timedelta, now: datetime | None = None) -> int:
    """End the NAS sessions silent (no event) for ``silent_for``; returns how many.

    Sessions from the REST routes are never stale: they send no Interims.
    The session ends ``now`` (until then its binding was in force); a later
    Interim of it does not re-open it, its NAS's next Start does.
    """
    at = clock() if now is None else now
    cutoff = at - silent_for
    stale = sa.select(h.c.id, h.c.account_id, h.c.ipv4_hex, h.c.ipv6_hex).where(
        t.open_interval(), h.c.last_seen < cutoff, h.c.session_id.is_not(None)
    )
    with store.read() as connection:
        if connection.execute(stale.limit(1)).first() is None:
            return 0  # the common case takes no write lock and no sequence number
    with store.write(STALE_ACTOR) as change:
        rows = change.connection.execute(stale.order_by(h.c.last_seen).limit(STALE_BATCH)).all()
        when = time_param(change.connection, at)
        mark = "?" if change.connection.dialect.name == "sqlite" else "%s"
        change.connection.exec_driver_sql(
            f"UPDATE session_history SET stopped = {mark}, ended = {mark} WHERE id = {mark}",
            [(when, when, row.id) for row in rows],
        )
        hexes: dict[int, set[str]] = {4: set(), 6: set()}
        for row in rows:
            for version, value in ((4, row.ipv4_hex), (6, row.ipv6_hex)):
                if value is not None:
                    hexes[version].add(value)
        counts = current.follow(change, {row.account_id for row in rows}, hexes)
        change.audit(
            "session.stale",
            "sessions",
            "stale",
            None,
            {"unbound": len(rows), "silent_for": silent_for.total_seconds(), **counts},
        )
    return len(rows)


def open_sessions_by_source(store: Store) -> dict[str, int]:
    """Open intervals by source (NAS name, or ``api:<actor>`` for REST bindings).

    Counts rows not yet ended: a session whose address a later session took
    without a Stop stays counted until its NAS restarts or it goes stale.
    """
    # The sources by a loose index scan (one probe of ix_session_history_source
    # per source: neither database skips through an index by itself), then
    # each source's open rows, an index range.
    first = sa.select(sa.func.min(h.c.source)).scalar_subquery()
    sources = sa.select(first.label("source")).cte("sources", recursive=True)
    following = sa.select(sa.func.min(h.c.source)).where(h.c.source > sources.c.source)
    sources = sources.union_all(
        sa.select(following.scalar_subquery()).where(sources.c.source.is_not(None))
    )
    opened = (
        sa.select(sa.func.count())
        .where(h.c.source == sources.c.source, t.open_interval())
        .scalar_subquery()
    )
    query = sa.select(sources.c.source, opened).where(sources.c.source.is_not(None))
    with store.read() as connection:
        counts = {source: int(count) for source, count in connection.execute(query)}
    return {source: count for source, count in sorted(counts.items()) if count}
