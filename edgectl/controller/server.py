"""Serve the app with uvicorn (uvicorn enters the controller here only)."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgectl.controller.app import create_app
from edgectl.controller.radius.server import RadiusServer, bind
from edgectl.controller.radius.wiring import feed_of
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store

log = logging.getLogger(__name__)


_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Connection: close\r\nContent-Length: 0\r\n\r\n"
)


class TimedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines, against slow or stalled senders.

    uvicorn times out only the idle gap between requests (keep-alive); a
    client that opens a connection and sends half a request header (or body)
    holds it, and a slot of ``limit_concurrency``, for ever.  Here a request's
    headers must be complete ``header_timeout`` after its first byte (or after
    the connection opened), and its body ``body_timeout`` after the headers,
    else the connection is closed.  Deadlines are totals, not idle gaps, so
    dripping a byte at a time does not extend them.

    httptools, not h11: it parses in C, and a fleet's long-polls and status
    reports (three requests per agent per change) spent about a tenth of the
    controller's CPU in h11's parsing and framing (bench/fleet.py).
    """

    header_timeout = 10.0  # set per server by timed_protocol()
    body_timeout = 60.0
    # A request line and headers larger than this are refused (h11's cap;
    # httptools has none, and would hold whatever arrives before the deadline).
    header_limit = 16 * 1024

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = True  # reading a request line and headers
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def data_received(self, data: bytes) -> None:
        waiting = self._in_headers
        super().data_received(data)
        if waiting and self._in_headers:  # this chunk did not finish the headers
            self._header_bytes += len(data)
            if self._header_bytes > self.header_limit and not self.transport.is_closing():
                log.info(
                    "closing %s: request headers over %d bytes", self.client, self.header_limit
                )
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._deadline is None:  # a kept-alive connection's next request
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        super().on_headers_complete()
        # Now the body's (a request without one completes at once, disarming it).
        self._arm(self.body_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # idle now: uvicorn's keep-alive timeout applies

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closing %s: request not received in time", self.client)
            self.transport.close()


def timed_protocol(settings: Settings) -> type[TimedProtocol]:
    """The protocol class with this server's deadlines (uvicorn takes a class)."""

    class Timed(TimedProtocol):
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
            # Always httptools (with the deadlines above), whatever else is installed.
            http=timed_protocol(settings),
            timeout_keep_alive=settings.keep_alive_timeout,
            limit_concurrency=settings.max_connections,
            # Do not announce the server software and version.
            server_header=False,
        )
    finally:
        store.close()
