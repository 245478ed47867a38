"""Serve the app with uvicorn (uvicorn enters the controller here only)."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from edgectl.controller.app import create_app
from edgectl.controller.radius.server import RadiusServer, bind
from edgectl.controller.radius.wiring import feed_of
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store

log = logging.getLogger(__name__)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read deadlines, against slow or stalled senders.

    uvicorn times out only the idle gap between requests (keep-alive); a
    client that opens a connection and sends half a request header (or body)
    holds it, and a slot of ``limit_concurrency``, for ever.  Here a request's
    headers must be complete ``header_timeout`` after its first byte (or after
    the connection opened), and its body ``body_timeout`` after the headers,
    else the connection is closed.  Deadlines are totals, not idle gaps, so
    dripping a byte at a time does not extend them.
    """

    header_timeout = 10.0  # set per server by timed_protocol()
    body_timeout = 60.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "headers" or "body"

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("headers")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.IDLE:
            # A new request's first bytes (the keep-alive timer covered the gap
            # before them, and data_received has just cancelled it).
            self._expect("headers")
        elif state is h11.SEND_BODY:
            self._expect("body")
        else:
            self._expect(None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is not h11.SEND_BODY:
            self._expect(None)  # idle now: uvicorn's keep-alive timeout applies

    def connection_lost(self, exc: Exception | None) -> None:
        self._expect(None)
        super().connection_lost(exc)

    def _expect(self, what: str | None) -> None:
        if what == self._waiting_for:
            return  # a deadline is a total: more bytes do not move it
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._waiting_for = what
        if what is not None:
            delay = self.header_timeout if what == "headers" else self.body_timeout
            self._deadline = self.loop.call_later(delay, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closing %s: request %s not received in time", self.client, self._waiting_for)
            self.transport.close()


def timed_protocol(settings: Settings) -> type[TimedH11Protocol]:
    """The protocol class with this server's deadlines (uvicorn takes a class)."""

    class Timed(TimedH11Protocol):
        header_timeout = settings.header_timeout
        body_timeout = settings.body_timeout

    return Timed


def _radius(settings: Settings, store: Store) -> RadiusServer | None:
    """The accounting feed, its sockets bound now: a port in use is a clear
    refusal at start, not a failure inside the running app."""
    if settings.radius is None:
        return None
    sockets = bind(settings.radius.listen)
    return RadiusServer(settings.radius, feed_of(store), sockets)


def serve(settings: Settings) -> None:
    store = Store.open(settings.database_url, migrate=settings.migrate_on_start)
    try:
        app = create_app(settings, store, radius=_radius(settings, store))
        # What start-up built (modules, the app, the store's metadata) lives as
        # long as the process: out of the collector's sight, a full collection
        # no longer walks it.  A RADIUS feed batch allocates enough to trigger
        # those, and walking this heap was a third of the batch's CPU.
        gc.collect()
        gc.freeze()
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            ssl_certfile=settings.tls_certfile,
            ssl_keyfile=settings.tls_keyfile,
            log_level=settings.log_level,
            # One process: the long-poll notifier and SQLite's single writer
            # both live in it.  Scale out with PostgreSQL and more processes.
            workers=None,
            proxy_headers=settings.allow_plain_http,
            # Parked long-polls would otherwise hold a shutdown for up to
            # max_wait; agents simply poll again.
            timeout_graceful_shutdown=5,
            # Always h11 (with the deadlines above), whatever else is installed.
            http=timed_protocol(settings),
            timeout_keep_alive=settings.keep_alive_timeout,
            limit_concurrency=settings.max_connections,
            # Do not announce the server software and version.
            server_header=False,
        )
    finally:
        store.close()
