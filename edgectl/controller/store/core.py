"""The store handle: a database, write transactions (``change.Change``) that
carry their own audit trail and recompile, and listeners told which gateways
a commit changed."""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.errors import Conflict
from edgectl.controller.store import schema
from edgectl.controller.store.change import Change, ViewCache
from edgectl.controller.store.db import Database
from edgectl.controller.store.materialize import finish

log = logging.getLogger(__name__)

Listener = Callable[[frozenset[int]], None]
# Gateway ids changed by a commit in another process; None: any may have.
RemoteListener = Callable[[frozenset[int] | None], None]
# A NOTIFY payload is at most 8000 bytes; past this many ids say "everyone".
_NOTIFY_IDS_MAX = 800
CredentialsListener = Callable[[], None]


def now() -> datetime:
    return datetime.now(UTC)


class BodyCache:
    """Served delta bodies by ``(gateway, since, revision, epoch)``, least recently used first out.

    A delta from ``since`` to ``revision`` is the same document for as long
    as ``revision`` is the gateway's current revision (entries change only
    by moving the revision), so many agents of one gateway parked on the
    same cursor share one computed body.  Revisions are global sequence
    numbers, so a key is never reused, not even by a gateway id SQLite
    hands out again; the epoch keeps a restored database's repeated
    numbers apart.  Thread-safe: bodies are built in worker threads.
    """

    def __init__(self, entries: int = 256, largest: int = 256 * 1024) -> None:
        self._entries = entries
        self._largest = largest
        self._bodies: OrderedDict[tuple[int, int, int, str | None], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int, int, str | None]) -> str | None:
        with self._lock:
            body = self._bodies.get(key)
            if body is not None:
                self._bodies.move_to_end(key)
            return body

    def put(self, key: tuple[int, int, int, str | None], body: str) -> None:
        if len(body) > self._largest:
            return
        with self._lock:
            self._bodies[key] = body
            self._bodies.move_to_end(key)
            while len(self._bodies) > self._entries:
                self._bodies.popitem(last=False)


class Store:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._listeners: list[Listener] = []
        self._credential_listeners: list[CredentialsListener] = []
        self._views = ViewCache()
        self.bodies = BodyCache()
        # Names this store's own notifications, which its listener skips.
        self.origin = secrets.token_hex(6)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        database = Database(url)
        if migrate:
            database.migrate()
        return cls(database)

    def close(self) -> None:
        self.database.dispose()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_credentials(self, listener: CredentialsListener) -> None:
        """``listener()`` runs after a commit that revoked or replaced credentials,
        before that write returns to its caller."""
        self._credential_listeners.append(listener)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.database.read() as connection:
            yield connection

    @contextmanager
    def write(self, actor: str) -> Iterator[Change]:
        try:
            with self.database.write() as connection:
                change = self._begin(connection, actor)
                yield change
                finish(change)
                if change.credentials:
                    # Other processes' re-checks see it move and forget their tokens.
                    connection.execute(
                        sa.update(schema.counter)
                        .where(schema.counter.c.id == 1)
                        .values(credentials_seq=change.seq)
                    )
                if change.touched or change.everyone:
                    # Sent at commit, to every other controller process.
                    self.database.notify(connection, self._payload(change))
        except sa.exc.IntegrityError as error:
            # Checks run first inside the same serialized transaction, so this
            # is a writer in another process winning a race on a unique key.
            log.info("integrity conflict: %s", error.orig)
            raise Conflict("conflicts with another change; retry") from None
        if change.credentials:
            self._credentials_changed()
        if change.touched:
            self._notify(frozenset(change.touched))

    def _payload(self, change: Change) -> str:
        """``origin:id,id,...``, or ``origin:*`` when every long-poll must look."""
        if change.everyone or len(change.touched) > _NOTIFY_IDS_MAX:
            return f"{self.origin}:*"
        return f"{self.origin}:{','.join(str(g) for g in sorted(change.touched))}"

    def follow(
        self,
        listener: RemoteListener,
        stop: threading.Event,
        lost: Callable[[], None] = lambda: None,
    ) -> None:
        """Call ``listener`` with the gateways other processes' commits change, until
        ``stop`` (blocks: run it in a thread); ``listener(None)`` when any may
        have (and on every connect), ``lost()`` when the connection broke.
        Returns at once on SQLite."""

        def handle(payload: str | None) -> None:
            if payload is None:
                listener(None)
                return
            origin, _, ids = payload.partition(":")
            if origin == self.origin:
                return  # this process woke its own waiters at commit
            if ids == "*":
                listener(None)
                return
            try:
                listener(frozenset(int(g) for g in ids.split(",") if g))
            except ValueError:
                log.warning("unreadable change notification %r; waking every waiter", payload)
                listener(None)

        self.database.listen(handle, stop, lost=lost)

    def _begin(self, connection: Connection, actor: str) -> Change:
        seq, catalog_seq = connection.execute(
            sa.update(schema.counter)
            .where(schema.counter.c.id == 1)
            .values(seq=schema.counter.c.seq + 1)
            .returning(schema.counter.c.seq, schema.counter.c.catalog_seq)
        ).one()
        return Change(connection, seq, now(), actor, catalog_seq=catalog_seq, views=self._views)

    def _notify(self, gateways: frozenset[int]) -> None:
        for listener in self._listeners:
            try:
                listener(gateways)
            except Exception:  # a listener's bug must not undo a committed change
                log.exception("change listener failed")

    def _credentials_changed(self) -> None:
        for listener in self._credential_listeners:
            try:
                listener()
            except Exception:
                log.exception("credentials listener failed")

    def current_seq(self, connection: Connection) -> int:
        return int(
            connection.execute(
                sa.select(schema.counter.c.seq).where(schema.counter.c.id == 1)
            ).scalar_one()
        )
