"""The engine: SQLite (WAL, one writer) or PostgreSQL, transactions and migrations.

SQLAlchemy enters the controller through the ``store`` package and nowhere
else; this module owns the engine and how a transaction begins.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from edgectl.controller.errors import Invalid

log = logging.getLogger(__name__)

MIGRATIONS = "edgectl.controller.store:migrations"
# PostgreSQL NOTIFY channel for "these gateways changed" between controller processes.
CHANGES_CHANNEL = "edgectl_changes"
# How long a LISTEN wait lasts before the stop flag is looked at again.
_LISTEN_TICK = 0.5


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def sqlite_path(url: str) -> Path | None:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def _guard_sqlite_file(path: Path) -> None:
    """Create the database owner-only; refuse one other users can read.

    It holds account-to-address bindings and abuse reasons: personal data.
    """
    if path.exists():
        mode = path.stat().st_mode
        if mode & stat.S_IROTH:
            raise Invalid(
                "database_url",
                f"{path} is world-readable ({stat.filemode(mode)}); chmod o-rwx it first",
            )
        return
    if not path.parent.is_dir():
        raise Invalid("database_url", f"directory {path.parent} does not exist")
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sqlite_engine(url: str) -> Engine:
    path = sqlite_path(url)
    if path is None:
        raise Invalid("database_url", "an SQLite URL needs a file path")
    _guard_sqlite_file(path)
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=8,
    )

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's begin (below) issue BEGIN, instead of pysqlite
        # deciding when a transaction starts (it would not for SELECTs, and
        # two SELECTs of one snapshot could then see different commits).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        # FULL: an accepted quarantine and its audit record survive a power
        # cut (NORMAL would only lose the last commits, but those are exactly
        # what an analyst was just told had happened).  One WAL fsync a commit.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # 32 MiB of page cache a connection (SQLite's default is 2 MiB): the
        # session history's address index takes writes at random places, and
        # with the default most of a bulk binding's index pages were re-read
        # from the OS for every batch (bench/controller_sessions.py).
        cursor.execute("PRAGMA cache_size=-32768")
        # Checkpoints run from the sweeper via checkpoint(), not inside
        # whichever commit crosses the 1000-page mark while holding the write
        # lock: that stalled every writer for up to seconds on a busy disk.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN: a writer that only found out
        # at its first UPDATE could deadlock against another reader-turned-writer.
        write = connection.get_execution_options().get("edgectl_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _postgres_engine(url: str) -> Engine:
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


class Database:
    """An engine plus the two kinds of transaction the store uses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _sqlite_engine(url) if url.startswith("sqlite") else _postgres_engine(url)
        self.dialect = self.engine.dialect.name
        # One writer at a time in this process; SQLite allows one anyway and
        # its busy handler sleeps in coarse steps that ruin tail latency.
        self._write_lock = threading.Lock()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A consistent snapshot: every statement sees the same commits."""
        with self.engine.connect() as connection:
            if self.dialect == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.connect() as connection:
            connection = connection.execution_options(edgectl_write=True)
            with connection.begin():
                yield connection

    def notify(self, connection: Connection, payload: str) -> None:
        """Queue ``payload`` on the changes channel, sent if and when ``connection``'s
        transaction commits (PostgreSQL only; SQLite has one process)."""
        if self.dialect == "postgresql":
            connection.execute(sa.select(sa.func.pg_notify(CHANGES_CHANNEL, payload)))

    def listen(
        self,
        handle: Callable[[str | None], None],
        stop: threading.Event,
        retry: float = 1.0,
        lost: Callable[[], None] = lambda: None,
    ) -> None:
        """Hand every payload on the changes channel to ``handle`` until ``stop``.

        Runs in a thread of its own on a connection of its own (outside the
        pool: it never returns one).  ``handle(None)`` after every (re)connect:
        whatever was sent while nobody listened is unknown, so the caller
        wakes everyone.  A lost connection (``lost()`` is called) is reopened every ``retry`` s;
        meanwhile the periodic re-check still finds other processes' changes.
        """
        if self.dialect != "postgresql":
            return
        engine = sa.create_engine(self.url, poolclass=NullPool)
        try:
            while not stop.is_set():
                try:
                    self._listen_once(engine, handle, stop)
                except Exception as error:  # the database restarted, the network broke
                    log.warning("LISTEN %s lost (%s); retrying", CHANGES_CHANNEL, error)
                    lost()
                    stop.wait(retry)
        finally:
            engine.dispose()

    def _listen_once(
        self, engine: Engine, handle: Callable[[str | None], None], stop: threading.Event
    ) -> None:
        raw = engine.raw_connection()
        try:
            driver: Any = raw.driver_connection  # psycopg.Connection, through SQLAlchemy
            driver.autocommit = True
            driver.execute(f"LISTEN {CHANGES_CHANNEL}")
            handle(None)
            while not stop.is_set():
                for message in driver.notifies(timeout=_LISTEN_TICK):
                    handle(message.payload)
        finally:
            raw.close()

    def checkpoint(self) -> None:
        """Copy the SQLite WAL into the database without blocking writers."""
        if self.dialect != "sqlite":
            return
        # On the driver connection: SQLAlchemy would wrap it in BEGIN, and a
        # checkpoint cannot pass its own transaction's snapshot.
        raw = self.engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
        finally:
            raw.close()

    def migrate(self) -> None:
        with self.engine.begin() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def at_latest_schema(self) -> bool:
        """Whether the database is migrated to this version's latest schema."""
        heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
        with self.engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
        return current == heads

    def dispose(self) -> None:
        self.engine.dispose()


def time_param(connection: Connection, value: datetime) -> object:
    """A time as the driver takes it directly, stored the way ``schema.Instant`` stores it."""
    if connection.dialect.name == "sqlite":
        # SQLAlchemy's SQLite DateTime format ("%Y-%m-%d %H:%M:%S.%f"); isoformat
        # writes it about 5x faster than strftime, and the feed converts a few
        # times per event.  [:26] drops the "+00:00".
        return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]
    return value


def insert_rows(
    connection: Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
) -> None:
    """Many rows through the driver's executemany, skipping SQLAlchemy's per-row
    parameter processing (most of the cost of a 5,000-binding batch).

    Values must already be what the driver takes (see ``time_param``);
    table and column names come from ``schema``, never from input.
    """
    if not rows:
        return
    mark = "?" if connection.dialect.name == "sqlite" else "%s"
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    if conflict:
        action = (
            "UPDATE SET " + ", ".join(f"{name} = excluded.{name}" for name in update)
            if update
            else "NOTHING"
        )
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO {action}"
    connection.exec_driver_sql(sql, list(rows))
