"""The tables.  Alembic migrations create them; this is what queries are written against.

Addresses are stored as canonical text for people and as fixed-width hex of
the network address for range queries: "which sessions lie inside this
subscriber key" is then a BETWEEN on an index in SQLite and PostgreSQL alike
(IPv6 does not fit a BIGINT, fixed-width hex sorts like the number).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()


class Instant(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC time on both backends.

    SQLite has no time type: store naive UTC text in one format so that
    comparisons (the expiry sweep) sort correctly, and hand back aware times.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def active(table: sa.Table) -> sa.ColumnElement[Any]:
    """``table.active`` written as the partial indexes' WHERE says it.

    SQLite uses a partial index only when the query repeats its predicate
    term for term, and SQLAlchemy writes a boolean column as ``active = 1``
    there (no native booleans): ``uq_quarantine_active_prefix`` went unused.
    """
    return sa.literal_column(f"{table.name}.active")


def among(column: Any, ids: Iterable[int]) -> Any:
    """``column IN (ids)`` with the integers written into the statement.

    A batch of a fleet's long-polls or status reports names hundreds of
    gateways: as bound parameters, psycopg re-parses the statement for each
    placeholder on every execution (statements that long are not cached),
    which cost more CPU than the database took to answer.  Integers only,
    so nothing needs quoting.
    """
    values = sorted(int(value) for value in ids)
    return column.in_(sa.bindparam(None, values, expanding=True, literal_execute=True))


def tombstone() -> sa.ColumnElement[Any]:
    """``NOT scope_entries.live``, as ``ix_scope_entries_tombstones`` says it.

    See ``active``.
    """
    return sa.literal_column("NOT scope_entries.live")


# One row: the change sequence.  Every write transaction increments it under
# a row lock, so sequence order is commit order even with several processes.
counter = sa.Table(
    "change_counter",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    # The seq of the last change to pools, relays, profiles or gateways: a
    # process may reuse its compiled catalogue while this has not moved.
    sa.Column("catalog_seq", sa.BigInteger, nullable=False, server_default="0"),
    # The store's identity: random, set by migration 0009 and replaced by
    # ``edgectl controller new-epoch`` or when an agent's cursor turns out to
    # be ahead of the store (a restored backup).  Agents hold it with their
    # revision; a cursor of another epoch is answered with a snapshot, since
    # its revisions may name a history this database never had.
    sa.Column("epoch", sa.String(32), nullable=True),
    # The seq of the last change that revoked or replaced a credential; every
    # process's periodic re-check reads it and drops its verified tokens when
    # it moved (tokens.TokenCache).
    sa.Column("credentials_seq", sa.BigInteger, nullable=False, server_default="0"),
)

rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(32), nullable=False, unique=True),
    sa.Column("new_per_minute", sa.Integer, nullable=False),
    sa.Column("burst", sa.Integer, nullable=False),
    sa.Column("concurrent", sa.Integer),
    sa.Column("per_destination", sa.Integer),
    sa.Column("shadow", sa.Boolean, nullable=False),
)

pools = sa.Table(
    "pools",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(32), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("prefixes", sa.Text, nullable=False),  # JSON list of canonical prefixes
    sa.Column("subscriber_prefix_len", sa.Integer),
    sa.Column("rate_limit", sa.String(32)),
    sa.Column("op25b_shadow", sa.Boolean, nullable=False),
)

relays = sa.Table(
    "relays",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(32), nullable=False, unique=True),
    sa.Column("prefixes", sa.Text, nullable=False),
)

gateways = sa.Table(
    "gateways",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("settings", sa.Text, nullable=False),  # JSON, the model's settings form
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    # The last change sequence that altered this gateway's own state (its
    # structure, its scope); its revision is the later of this and its
    # scope's (``wanted_revision``).
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("structure", sa.Text, nullable=False),  # compiled structure JSON
    sa.Column("structure_seq", sa.BigInteger, nullable=False),
    # Cursors below the horizon may miss purged removals, or predate the
    # gateway's move to its scope: they get a snapshot.
    sa.Column("horizon", sa.BigInteger, nullable=False),
    # The entry stream this gateway is served (see ``entry_scopes``); NULL
    # only inside the change that registers it.  No foreign key: adding one
    # to an existing table on SQLite means rebuilding it, and dropping the old
    # table there cascades into every table that references gateways.  Only
    # scopes.regroup writes it, and it deletes a scope only once unreferenced.
    sa.Column("scope_id", sa.Integer),
    # The change that put it in its scope: the scope's revisions before it
    # are not this gateway's (its lag is not measured from them).
    sa.Column("scope_seq", sa.BigInteger, nullable=False, server_default="0"),
    # A change to a scope's entries moves its gateways' revisions.
    sa.Index("ix_gateways_scope", "scope_id"),
)

# Gateways whose entries compile from the same inputs - the pools they serve
# and whether they have a walled garden - share one entry stream: a hold
# change compiles and writes its entries once per scope, not once per
# gateway.  ``signature`` names those inputs (scopes.signature); a gateway
# whose inputs change moves to the scope of its new signature, and its horizon
# moves to that change, so no cursor from before the move gets a delta.
entry_scopes = sa.Table(
    "entry_scopes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("signature", sa.String(64), nullable=False, unique=True),
    # The last change sequence that altered its entries: a change to them
    # moves one row here, not the revision of each of its gateways.
    sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
)

# When each of a scope's revisions was made, as ``revisions`` per gateway:
# a gateway's lag runs from the first row of its own or of its scope (since
# it joined it) above its applied revision.  Shared by the scope's gateways,
# so a report does not forget them; the sweeper forgets those older than
# tombstone_retention except the current one and each gateway's first
# unapplied one.
scope_revisions = sa.Table(
    "scope_revisions",
    metadata,
    sa.Column(
        "scope_id",
        sa.Integer,
        sa.ForeignKey("entry_scopes.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("at", Instant(), nullable=False),
    # The sweeper's "any revision time past the retention?", per scope.
    sa.Index("ix_scope_revisions_at", "scope_id", "at"),
)


def wanted_revision() -> sa.Label[Any]:
    """A gateway's revision, labelled ``revision``: the later of its own and its
    scope's (a primary-key read of its scope, correlated to ``gateways``)."""
    scope = (
        sa.select(entry_scopes.c.revision)
        .where(entry_scopes.c.id == gateways.c.scope_id)
        .correlate(gateways)
        .scalar_subquery()
    )
    own = gateways.c.revision
    return sa.case((scope > own, scope), else_=own).label("revision")


def gateway_row() -> sa.Select[Any]:
    """Every column of ``gateways`` with ``revision`` the gateway's revision
    (``wanted_revision``) and ``own_revision`` the column."""
    columns = [c for c in gateways.c if c.name != "revision"]
    return sa.select(*columns, gateways.c.revision.label("own_revision"), wanted_revision())


gateway_pools = sa.Table(
    "gateway_pools",
    metadata,
    sa.Column(
        "gateway_id", sa.Integer, sa.ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("pool_id", sa.Integer, sa.ForeignKey("pools.id"), primary_key=True),
)

gateway_status = sa.Table(
    "gateway_status",
    metadata,
    sa.Column(
        "gateway_id", sa.Integer, sa.ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("applied_revision", sa.BigInteger, nullable=False),
    sa.Column("reported_at", Instant(), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)

# When each of a gateway's revisions was made: one row per change that moved
# its revision, so "how long has the controller wanted something this
# gateway has not applied" is the time of the first row above its applied
# revision.  A report forgets the rows it has caught up with (the row of the
# current revision always stays), the sweeper those older than
# tombstone_retention except the first unapplied one.
revisions = sa.Table(
    "gateway_revisions",
    metadata,
    sa.Column(
        "gateway_id", sa.Integer, sa.ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("at", Instant(), nullable=False),
    # The sweeper's "any revision time past the retention?", per gateway,
    # without walking a week of them (a gateway whose agent is away).
    sa.Index("ix_gateway_revisions_at", "gateway_id", "at"),
)

# The offenders report of each gateway's latest status report that carried
# one (older agents send none; their last one, if any, stays).
offender_reports = sa.Table(
    "offender_reports",
    metadata,
    sa.Column(
        "gateway_id", sa.Integer, sa.ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("window_seconds", sa.Integer, nullable=False),
    sa.Column("entries", sa.Integer, nullable=False),  # rows in offenders: no count per read
    sa.Column("reported_at", Instant(), nullable=False),
)

# Its entries: subscriber keys the gateway's block log named, one row per
# (key, kind, policy, shadow): a shadow and an enforcing rule of the same
# policy (while it is being switched) are separate, one refused, the other
# let through.  Rows, not JSON, so that they aggregate across gateways.
offenders = sa.Table(
    "offenders",
    metadata,
    sa.Column(
        "gateway_id", sa.Integer, sa.ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("key", sa.String(64), primary_key=True),  # canonical prefix text
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("policy", sa.String(64), primary_key=True),
    sa.Column("shadow", sa.Boolean, primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("first_seen", Instant(), nullable=False),
    sa.Column("last_seen", Instant(), nullable=False),
    sa.Index("ix_offenders_key", "key", "kind", "policy"),
)

# The compiled quarantine/exemption entries of each scope, with the sequence
# that last changed each; removed entries stay as tombstones (live = false)
# so "what changed since cursor N" is an index range, not a recompute.
entries = sa.Table(
    "scope_entries",
    metadata,
    sa.Column(
        "scope_id",
        sa.Integer,
        sa.ForeignKey("entry_scopes.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("kind", sa.String(1), primary_key=True),  # q(uarantine) / e(xemption)
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),  # the model's JSON form of the entry
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("live", sa.Boolean, nullable=False),
    sa.Column("changed_at", Instant(), nullable=False),
    sa.Index("ix_scope_entries_seq", "scope_id", "seq"),
    # A recompile reads every scope's entries of a few keys, whatever the
    # kind: an index that led with kind left that a scan of every entry.
    sa.Index("ix_scope_entries_by_key", "key"),
    # The sweeper's "any tombstone old enough to purge?", without walking
    # the live entries.
    sa.Index(
        "ix_scope_entries_tombstones",
        "changed_at",
        sqlite_where=sa.text("NOT live"),
        postgresql_where=sa.text("NOT live"),
    ),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ref", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", Instant(), nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("ipv4", sa.String(15)),
    sa.Column("ipv4_hex", sa.String(8), unique=True),
    sa.Column("ipv6", sa.String(64)),
    sa.Column("ipv6_hex", sa.String(32), unique=True),
    sa.Column("updated_at", Instant(), nullable=False),
)


def open_interval() -> sa.ColumnElement[Any]:
    """An open session interval: ``session_history.ended IS NULL``."""
    return sa.literal_column("session_history.ended IS NULL")


# Every binding as an interval: who held which IPv4 address and IPv6 prefix
# from ``started`` (inclusive) until ``ended`` (exclusive; NULL: still open).
# A RADIUS session is one row, keyed by (source, session_id, account); a REST
# binding is a row with no session_id.  Rows never close each other: when a
# later row starts on the same address, the earlier one has lost it from
# then on (a missed Stop), which lookups read as "the latest row that started
# on the address at or before T".  Keeping that derived rather than written
# is what makes the feed's store state the same for any order of its events
# (see store/feed.py).  Addresses are hex like ``sessions``' columns.
session_history = sa.Table(
    "session_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),  # NAS name, or api:<actor>
    sa.Column("session_id", sa.String(253)),  # Acct-Session-Id; NULL for REST bindings
    sa.Column("ipv4", sa.String(15)),
    sa.Column("ipv4_hex", sa.String(8)),
    sa.Column("ipv6", sa.String(64)),
    sa.Column("ipv6_hex", sa.String(32)),
    # When the event that gave each address happened: the earliest wins, so
    # that the order events arrive in does not decide.
    sa.Column("ipv4_seen", Instant()),
    sa.Column("ipv6_seen", Instant()),
    sa.Column("started", Instant(), nullable=False),
    sa.Column("last_seen", Instant(), nullable=False),
    sa.Column("stopped", Instant()),  # the Stop's time (or the REST unbind's)
    sa.Column("ended", Instant()),  # min(stopped, the NAS's first restart after started)
    sa.UniqueConstraint("session_id", "source", "account_id", name="uq_session_history_session"),
    # "Who held X at T": the latest row on X that started at or before T.
    sa.Index("ix_session_history_ipv4", "ipv4_hex", "started"),
    sa.Index("ix_session_history_ipv6", "ipv6_hex", "started"),
    # No partial indexes ("ended IS NULL"): on a young table PostgreSQL would
    # walk a small partial index rather than probe the right one.  ``ended``
    # leads where open rows are wanted (IS NULL is an index condition).
    # An account's open rows, and its history.
    sa.Index("ix_session_history_account", "account_id", "ended", "started"),
    # A NAS's sessions running at a restart (Accounting-On/Off), its open count.
    sa.Index("ix_session_history_source", "source", "ended", "started"),
    # Retention (ended < cutoff) and the stale sweep (open, last seen before).
    sa.Index("ix_session_history_ended", "ended", "last_seen"),
)

# When each NAS restarted (Accounting-On/Off): a session begun before a
# restart ended at it, whichever arrives first, so the restart is a fact
# kept for the events still to come, not only an update of what is stored.
nas_restarts = sa.Table(
    "nas_restarts",
    metadata,
    sa.Column("source", sa.String(200), primary_key=True),
    sa.Column("at", Instant(), primary_key=True),
)

quarantines = sa.Table(
    "quarantines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id")),
    sa.Column("prefix", sa.String(64)),
    sa.Column("prefix_hex", sa.String(32)),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("ticket", sa.String(200)),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_at", Instant(), nullable=False),
    sa.Column("updated_at", Instant(), nullable=False),
    sa.Column("expires_at", Instant()),
    # Active is a stored flag, not "expires_at > now()", so that what gateways
    # enforce changes at a sequence number the sweeper assigns, not silently.
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("ended_at", Instant()),
    sa.Column("ended_by", sa.String(200)),
    sa.Column("end_reason", sa.Text),
    # The operator's category for the notice portal ("spam", "botnet"): the
    # subscriber reads the operator's text for it, never the analyst's reason.
    sa.Column("category", sa.String(32)),
    # May the subscriber lift it from the portal?  NULL (holds made before
    # 0006): the mode's default, MODE_POLICY[mode].self_release.
    sa.Column("self_release", sa.Boolean),
    sa.CheckConstraint("(account_id IS NULL) <> (prefix IS NULL)", name="ck_quarantine_target"),
    sa.Index(
        "uq_quarantine_active_account",
        "account_id",
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    ),
    sa.Index(
        "uq_quarantine_active_prefix",
        "prefix",
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    ),
    sa.Index("ix_quarantine_prefix_hex", "prefix_hex"),
    # "Is there any bare-prefix hold?", asked by every session upsert: only
    # those holds are in it (walking the active ones would grow with holds).
    sa.Index(
        "ix_quarantine_prefix_holds",
        "id",
        sqlite_where=sa.text("active AND prefix IS NOT NULL"),
        postgresql_where=sa.text("active AND prefix IS NOT NULL"),
    ),
    sa.Index("ix_quarantine_ticket", "ticket"),
    # The console's counts per filter value (holds.quarantine_counts): covering
    # indexes, so counting 100k holds reads narrow index entries, not rows
    # with their reasons, and the GROUP BY streams in index order (no sort).
    sa.Index("ix_quarantine_facets", "mode", "actor", "active", "ended_by"),
    sa.Index("ix_quarantine_ticket_facets", "ticket", "active", "mode", "actor", "ended_by"),
    # No index leads with "active": most rows are active, and SQLite (with no
    # statistics) would pick it over the selective account/prefix indexes.
    # Partial on active, so that the sweeper's "anything due?" does not walk
    # every hold that ever expired.
    sa.Index(
        "ix_quarantine_due",
        "expires_at",
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    ),
    sa.Index("ix_quarantine_account", "account_id"),
)

# The notice portal's log (RFC 6108: a record of every notice): notices
# shown, acknowledgements and self-releases, per account.  A "shown" row
# carries the one-time code's hash until the code is used or expires; a
# "released" row carries the grace period in which the same category (else
# reason) may not hold the account again.
portal_notices = sa.Table(
    "portal_notices",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    # NULL: a hold placed on an address, not an account.
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id")),
    sa.Column("quarantine_id", sa.Integer, sa.ForeignKey("quarantines.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("at", Instant(), nullable=False),
    sa.Column("address", sa.String(64), nullable=False),
    sa.Column("language", sa.String(16)),
    sa.Column("host", sa.String(253)),
    sa.Column("code_hash", sa.String(64)),
    sa.Column("code_expires", Instant()),
    sa.Column("grace_key", sa.Text),
    sa.Column("grace_until", Instant()),
    sa.Index("ix_portal_notices_account", "account_id", "kind", "at"),
    sa.Index("ix_portal_notices_code", "quarantine_id", "code_hash"),
    # A hold's last acknowledgement, asked by every notice (reminder or not).
    sa.Index("ix_portal_notices_hold", "quarantine_id", "kind", "at"),
)

exemptions = sa.Table(
    "exemptions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("ticket", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_at", Instant(), nullable=False),
    sa.Column("expires_at", Instant()),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("ended_at", Instant()),
    sa.Column("ended_by", sa.String(200)),
    sa.Column("end_reason", sa.Text),
    sa.Index(
        "uq_exemption_active_account",
        "account_id",
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    ),
    sa.Index(
        "ix_exemption_due",
        "expires_at",
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    ),
    sa.Index("ix_exemption_account", "account_id"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Instant(), nullable=False),
)

# Web console sign-ins (controller/console): the cookie carries a random id,
# stored here only as its SHA-256 (like tokens), with the digest of the API
# token it was exchanged for, so every request re-checks that token and a
# revoked token ends its sessions.  A table, not process memory: any
# controller process of a PostgreSQL fleet can serve the next request.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", Instant(), nullable=False),
    sa.Column("last_seen", Instant(), nullable=False),
    sa.Index("ix_console_sessions_token", "token_hash"),
    sa.Index("ix_console_sessions_created", "created_at"),
)

audit = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("at", Instant(), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("object_type", sa.String(32), nullable=False),
    sa.Column("object_id", sa.String(200), nullable=False),
    sa.Column("before", sa.Text),
    sa.Column("after", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Index("ix_audit_object", "object_type", "object_id"),
    sa.Index("ix_audit_actor", "actor"),
)

# Abuse reports from outside (ARF, X-ARF, CSV), one row per event.  Kept
# whether or not anyone held the address then (``account_id`` NULL: listed
# as unattributed).  De-duplicated by two keys: the reporter's own message
# id (the same report relayed twice) and the event itself (address, time,
# class: two feedback loops reporting one message).
reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("received_at", Instant(), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),  # who posted it (actor)
    sa.Column("format", sa.String(8), nullable=False),
    sa.Column("message_id", sa.String(250)),
    sa.Column("class", sa.String(32), nullable=False),
    sa.Column("address", sa.String(64), nullable=False),
    sa.Column("at", Instant(), nullable=False),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id")),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id")),
    sa.Column("attribution", sa.Text),  # JSON: the interval that made the account
    sa.Column("detail", sa.Text),  # JSON: reporter, subject, ... (bounded)
    sa.Column("event_key", sa.String(64), nullable=False, unique=True),
    sa.Column("message_key", sa.String(64), unique=True),
    sa.Index("ix_reports_account", "account_id", "at"),
    sa.Index("ix_reports_at", "at"),
    sa.Index("ix_reports_case", "case_id"),
)

# Reports grouped per account and class: what an analyst works through.
cases = sa.Table(
    "cases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("class", sa.String(32), nullable=False),
    sa.Column("opened_at", Instant(), nullable=False),
    sa.Column("updated_at", Instant(), nullable=False),
    sa.Column("first_at", Instant(), nullable=False),  # the earliest report's event time
    sa.Column("last_at", Instant(), nullable=False),
    sa.Column("reports", sa.Integer, nullable=False),
    sa.UniqueConstraint("account_id", "class", name="uq_cases_account_class"),
)

# The gateways' offender entries as the escalation engine saw them: one row
# per agent entry (gateway, key, kind, rule, first_seen), its count as last
# seen.  The offenders table holds only each gateway's latest report; this
# is the history that strikes cite and that a replay reads.
offender_episodes = sa.Table(
    "offender_episodes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("gateway", sa.String(64), nullable=False),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("policy", sa.String(64), nullable=False),  # the agent's rule (profile) name
    sa.Column("first_seen", Instant(), nullable=False),
    sa.Column("last_seen", Instant(), nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id")),
    sa.UniqueConstraint(
        "gateway", "key", "kind", "policy", "first_seen", name="uq_offender_episodes_entry"
    ),
    sa.Index("ix_offender_episodes_seen", "last_seen"),
)

# Escalation policies: a ladder (JSON, see escalation/ladder.py) and a mode.
policies = sa.Table(
    "policies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("mode", sa.String(16), nullable=False),  # dry-run / propose / enforce
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_at", Instant(), nullable=False),
    sa.Column("updated_at", Instant(), nullable=False),
    # The last report id this policy has looked at (reports only grow).
    sa.Column("report_cursor", sa.BigInteger, nullable=False, server_default="0"),
)

# Offender events a policy has already counted (or absorbed during a hold),
# per episode: the next strike needs that many more.
policy_marks = sa.Table(
    "policy_marks",
    metadata,
    sa.Column(
        "policy_id", sa.Integer, sa.ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "episode_id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("offender_episodes.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("events", sa.BigInteger, nullable=False),
)

# Every strike and what the policy did about it.  ``outcome``: enforced,
# proposed, dry-run, braked (a proposal because a cap was reached), exempt
# (an exemption won), held (the account was already held: evidence only).
strikes = sa.Table(
    "strikes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column(
        "policy_id", sa.Integer, sa.ForeignKey("policies.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("at", Instant(), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),  # 0 for an uncounted (held) strike
    sa.Column("step", sa.Integer),
    sa.Column("mode", sa.String(16)),  # the quarantine mode of the step
    sa.Column("pool", sa.String(32)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),  # JSON
    sa.Column("quarantine_id", sa.Integer, sa.ForeignKey("quarantines.id")),
    sa.Index("ix_strikes_account", "policy_id", "account_id", "at"),
    sa.Index("ix_strikes_at", "outcome", "at"),
)

# Actions waiting for an analyst: a propose-mode policy's, or an enforce-mode
# one's held back by a brake.
proposals = sa.Table(
    "proposals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "strike_id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("strikes.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    sa.Column("policy", sa.String(64), nullable=False),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("duration", sa.Integer),  # seconds; NULL: until lifted
    sa.Column("review", sa.Boolean, nullable=False),
    sa.Column("why", sa.String(16), nullable=False),  # propose / brake
    sa.Column("created_at", Instant(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending / approved / rejected
    sa.Column("decided_at", Instant()),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("quarantine_id", sa.Integer, sa.ForeignKey("quarantines.id")),
    sa.Index("ix_proposals_state", "state", "id"),
)
