"""Abuse reports: kept, de-duplicated, attributed to whoever held the address then,
and grouped into cases per account and class."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.errors import NotFound
from edgectl.controller.reports.model import Report
from edgectl.controller.store import attribution, loaders
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store
from edgectl.controller.store.db import insert_rows, time_param

r, c = t.reports, t.cases

MAX_BATCH = 50_000  # reports in one request


def event_key(report: Report) -> str:
    """The event itself: the same address, time and class is one event, whoever reports it."""
    text = f"{report.address}|{report.at.isoformat()}|{report.cls}"
    return hashlib.sha256(text.encode()).hexdigest()


def message_key(source: str, report: Report) -> str | None:
    """The same report relayed again by the same source."""
    if report.message_id is None:
        return None
    return hashlib.sha256(f"{source}\n{report.message_id}".encode()).hexdigest()


_COLUMNS = (
    "received_at",
    "source",
    "format",
    "message_id",
    "class",
    "address",
    "at",
    "account_id",
    "case_id",
    "attribution",
    "detail",
    "event_key",
    "message_key",
)


def ingest(store: Store, actor: str, reports: Sequence[Report]) -> dict[str, Any]:
    """Keep ``reports`` (from ``actor``): all in one transaction, or none.

    Returns counts: accepted, duplicates (already kept, or repeated within
    the batch), attributed, unattributed, and the cases they went to.
    """
    with store.write(actor) as change:
        connection = change.connection
        fresh: list[tuple[Report, str, str | None]] = []
        seen_events: set[str] = set()
        seen_messages: set[str] = set()
        for report in reports:
            event, message = event_key(report), message_key(actor, report)
            if event in seen_events or (message is not None and message in seen_messages):
                continue
            seen_events.add(event)
            if message is not None:
                seen_messages.add(message)
            fresh.append((report, event, message))
        kept_events = set(
            row.event_key
            for row in loaders.rows_in(
                connection, sa.select(r.c.event_key), r.c.event_key, sorted(seen_events)
            )
        )
        kept_messages = set(
            row.message_key
            for row in loaders.rows_in(
                connection, sa.select(r.c.message_key), r.c.message_key, sorted(seen_messages)
            )
        )
        fresh = [
            item
            for item in fresh
            if item[1] not in kept_events and (item[2] is None or item[2] not in kept_messages)
        ]
        found = attribution.holders(connection, [(item[0].address, item[0].at) for item in fresh])
        cases = _file_cases(change.connection, change.at, fresh, found)
        at = time_param(connection, change.at)
        rows = []
        for (report, event, message), holder in zip(fresh, found, strict=True):
            account = None if holder is None else holder["account_id"]
            case = None if account is None else cases[(account, report.cls)]
            how = None
            if holder is not None:
                how = json.dumps({k: v for k, v in holder.items() if k != "account_id"})
            rows.append(
                (
                    at,
                    actor[:200],
                    report.format,
                    report.message_id,
                    report.cls,
                    str(report.address),
                    time_param(connection, report.at),
                    account,
                    case,
                    how,
                    json.dumps(report.detail, sort_keys=True) if report.detail else None,
                    event,
                    message,
                )
            )
        insert_rows(connection, r, _COLUMNS, rows)
        attributed = sum(1 for holder in found if holder is not None)
        summary = {
            "received": len(reports),
            "accepted": len(fresh),
            "duplicates": len(reports) - len(fresh),
            "attributed": attributed,
            "unattributed": len(fresh) - attributed,
            "cases": sorted(set(cases.values())),
        }
        if fresh:
            # One record per batch: the reports themselves are the detail.
            change.audit("reports.ingest", "reports", actor[:200], None, summary)
    return summary


def _file_cases(
    connection: Connection,
    at: datetime,
    fresh: Sequence[tuple[Report, str, str | None]],
    found: Sequence[dict[str, Any] | None],
) -> dict[tuple[int, str], int]:
    """Case id per (account id, class), opening cases not seen before."""
    spans: dict[tuple[int, str], list[Any]] = {}
    for (report, _, _), holder in zip(fresh, found, strict=True):
        if holder is None:
            continue
        key = (holder["account_id"], report.cls)
        span = spans.setdefault(key, [report.at, report.at, 0])
        span[0], span[1], span[2] = min(span[0], report.at), max(span[1], report.at), span[2] + 1
    if not spans:
        return {}
    existing: dict[tuple[int, str], Any] = {}
    query = sa.select(c.c.id, c.c.account_id, c.c["class"], c.c.first_at, c.c.last_at)
    for row in loaders.rows_in(connection, query, c.c.account_id, sorted({a for a, _ in spans})):
        existing[(row.account_id, row._mapping["class"])] = row
    new = [key for key in spans if key not in existing]
    stamp = time_param(connection, at)
    # Through the driver's executemany: a feed opens thousands of cases at once,
    # and SQLAlchemy's per-row processing was a third of the ingest.
    insert_rows(
        connection,
        c,
        ("account_id", "class", "opened_at", "updated_at", "first_at", "last_at", "reports"),
        [
            (
                account,
                cls,
                stamp,
                stamp,
                time_param(connection, spans[(account, cls)][0]),
                time_param(connection, spans[(account, cls)][1]),
                spans[(account, cls)][2],
            )
            for account, cls in new
        ],
    )
    update = [key for key in spans if key in existing]
    if update:
        connection.execute(
            sa.update(c)
            .where(c.c.id == sa.bindparam("ident"))
            .values(
                updated_at=at,
                first_at=sa.bindparam("first"),
                last_at=sa.bindparam("last"),
                reports=c.c.reports + sa.bindparam("more"),
            ),
            [
                {
                    "ident": existing[key].id,
                    "first": min(existing[key].first_at, spans[key][0]),
                    "last": max(existing[key].last_at, spans[key][1]),
                    "more": spans[key][2],
                }
                for key in update
            ],
        )
    ids: dict[tuple[int, str], int] = {key: row.id for key, row in existing.items()}
    for row in loaders.rows_in(connection, query, c.c.account_id, sorted({a for a, _ in new})):
        ids[(row.account_id, row._mapping["class"])] = row.id
    return {key: ids[key] for key in spans}


@dataclass(frozen=True, slots=True)
class ReportFilter:
    account: str | None = None
    cls: str | None = None
    unattributed: bool = False
    since: datetime | None = None
    until: datetime | None = None
    case: int | None = None
    after_id: int | None = None
    limit: int = 100


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def report_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_at": _iso(row.received_at),
        "source": row.source,
        "format": row.format,
        "message_id": row.message_id,
        "class": row._mapping["class"],
        "address": row.address,
        "at": _iso(row.at),
        "account": row.ref,
        "case": row.case_id,
        "attribution": None if row.attribution is None else json.loads(row.attribution),
        "detail": None if row.detail is None else json.loads(row.detail),
    }


def listing(store: Store, wanted: ReportFilter) -> list[dict[str, Any]]:
    query = sa.select(r, t.accounts.c.ref).select_from(
        r.outerjoin(t.accounts, t.accounts.c.id == r.c.account_id)
    )
    if wanted.account is not None:
        query = query.where(t.accounts.c.ref == wanted.account)
    if wanted.cls is not None:
        query = query.where(r.c["class"] == wanted.cls)
    if wanted.unattributed:
        query = query.where(r.c.account_id.is_(None))
    if wanted.since is not None:
        query = query.where(r.c.at >= wanted.since)
    if wanted.until is not None:
        query = query.where(r.c.at < wanted.until)
    if wanted.case is not None:
        query = query.where(r.c.case_id == wanted.case)
    if wanted.after_id is not None:
        query = query.where(r.c.id > wanted.after_id)
    query = query.order_by(r.c.id).limit(wanted.limit)
    with store.read() as connection:
        return [report_public(row) for row in connection.execute(query)]


def case_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "account": row.ref,
        "class": row._mapping["class"],
        "opened_at": _iso(row.opened_at),
        "updated_at": _iso(row.updated_at),
        "first_at": _iso(row.first_at),
        "last_at": _iso(row.last_at),
        "reports": row.reports,
    }


def _cases_query() -> sa.Select[Any]:
    return sa.select(c, t.accounts.c.ref).join(t.accounts, t.accounts.c.id == c.c.account_id)


def cases(
    store: Store, account: str | None = None, cls: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = _cases_query()
    if account is not None:
        query = query.where(t.accounts.c.ref == account)
    if cls is not None:
        query = query.where(c.c["class"] == cls)
    query = query.order_by(c.c.updated_at.desc(), c.c.id.desc()).limit(limit)
    with store.read() as connection:
        return [case_public(row) for row in connection.execute(query)]


def case(store: Store, ident: int) -> dict[str, Any]:
    with store.read() as connection:
        row = connection.execute(_cases_query().where(c.c.id == ident)).first()
    if row is None:
        raise NotFound(f"no case {ident}")
    return case_public(row)
