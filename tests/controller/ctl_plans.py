"""Which statements a piece of store code runs, and which of them scan a big table.

The statements are recorded as the driver received them (SQL and
parameters) and explained afterwards on a separate connection:

- SQLite: ``EXPLAIN QUERY PLAN``; a ``SCAN <table>`` line (with or without
  "USING INDEX": a full index walk is a scan too) is a scan.
- PostgreSQL: ``EXPLAIN (FORMAT JSON)`` with ``enable_seqscan = off``, so
  that the verdict does not hang on table sizes: a Seq Scan that remains
  means no index can serve the statement, and an index scan with no index
  condition that filters rows is a walk of the whole index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from edgectl.controller.store import Store

# Tables that grow with subscribers, holds or history.  The others hold
# one row per pool, relay, profile, gateway or token: scanning them is fine.
BIG = frozenset(
    {
        "accounts",
        "sessions",
        "quarantines",
        "exemptions",
        "scope_entries",
        "gateway_revisions",
        "scope_revisions",
        "audit_log",
        "offenders",
        "session_history",
        "portal_notices",
    }
)

# Partial indexes holding only rows that answer the query they serve (a
# bare-prefix hold is rare): walking one reads answers, not a table.
ANSWERS_ONLY = frozenset({"ix_quarantine_prefix_holds"})

Statement = tuple[str, Any]


@contextmanager
def recorded(store: Store) -> Iterator[list[Statement]]:
    """Every statement the store's engine runs inside the block."""
    found: list[Statement] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        found.append((statement, parameters[0] if many and parameters else parameters))

    engine = store.database.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield found
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _explainable(statement: str) -> bool:
    return statement.lstrip().split(None, 1)[0].upper() in {"SELECT", "UPDATE", "DELETE"}


def _sqlite_scans(connection: sa.Connection, statement: Statement) -> list[str]:
    sql, parameters = statement
    rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters).all()
    scans = []
    for row in rows:
        detail = str(row[-1])
        words = detail.split()
        if len(words) >= 2 and words[0] == "SCAN" and words[1] in BIG:
            if words[-1] in ANSWERS_ONLY:
                continue
            scans.append(detail)
    return scans


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


_LEADING = """
SELECT t.relname, a.attname FROM pg_index i
JOIN pg_class x ON x.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE x.relname = %(name)s
"""


def _postgres_scans(connection: sa.Connection, statement: Statement) -> list[str]:
    sql, parameters = statement
    plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, parameters).scalar_one()
    document = plan if isinstance(plan, list) else json.loads(plan)
    scans = []
    for node in _nodes(document[0]["Plan"]):
        kind = node["Node Type"]
        if kind == "Seq Scan" and node.get("Relation Name") in BIG:
            scans.append(f"Seq Scan on {node['Relation Name']}")
        index = node.get("Index Name")
        if index is None or index in ANSWERS_ONLY:
            continue
        table, leading = connection.exec_driver_sql(_LEADING, {"name": index}).one()
        if table not in BIG:
            continue
        condition = node.get("Index Cond", "")
        # No condition on the index's first column: every entry of the index
        # is visited (PostgreSQL checks a later column's condition in the
        # index, which looks indexed in the plan but is still a walk).  Rows
        # a partial index holds are all answers only if nothing is filtered.
        if not re.search(rf"\b{re.escape(leading)}\b", condition) and (
            condition or "Filter" in node
        ):
            scans.append(f"{kind} on {table} walks {index} (no condition on {leading})")
    return scans


def scans(store: Store, statements: list[Statement]) -> dict[str, list[str]]:
    """Statement text -> the big tables it scans, for statements that scan any."""
    found: dict[str, list[str]] = {}
    postgres = store.database.dialect == "postgresql"
    with store.database.engine.connect() as connection:
        if postgres:
            connection.exec_driver_sql("SET enable_seqscan = off")
        for statement in statements:
            if statement[0] in found or not _explainable(statement[0]):
                continue
            verdict = (_postgres_scans if postgres else _sqlite_scans)(connection, statement)
            if verdict:
                found[statement[0]] = verdict
        connection.rollback()
    return found
