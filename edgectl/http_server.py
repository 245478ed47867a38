"""Serve an ASGI app with uvicorn (uvicorn enters edgectl here only):
httptools, with read deadlines against slow or stalled senders.

uvicorn times out only the idle gap between keep-alive requests; a client
that opens a connection and sends half a request header (or body), or drips
a byte at a time, holds the connection, its memory and a slot of
``limit_concurrency`` for ever.  The controller faces agents and scripts,
the notice portal faces the walled garden's subscribers, infected machines
among them: both close such connections.

httptools, not h11: it parses in C.  A fleet's long-polls and status reports
spent about a tenth of the controller's CPU in h11 (bench/fleet.py), and the
portal's own share of a notice fell from ~0.9 to ~0.45 ms of CPU
(bench/portal_notices.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Connection: close\r\nContent-Length: 0\r\n\r\n"
)

# uvicorn's exit status when a server could not start (uvicorn.run's).
_STARTUP_FAILURE = 3


@dataclass(frozen=True)
class Deadlines:
    """How long a request may take to arrive; totals, not idle gaps, so
    dripping bytes does not extend them.

    ``header_timeout`` runs from the connection's opening (or a kept-alive
    connection's next first byte) to the end of the headers;
    ``body_timeout`` from there to the end of the body.  ``None`` for the
    body: the header deadline covers the whole request."""

    header_timeout: float = 10.0
    body_timeout: float | None = 60.0
    # A request line and headers larger than this are refused (h11's cap;
    # httptools has none, and would hold whatever arrives before the deadline).
    header_limit: int = 16 * 1024

    def protocol(self) -> type[DeadlineProtocol]:
        """The protocol class with these deadlines (uvicorn takes a class)."""

        class Timed(DeadlineProtocol):
            deadlines = self

        return Timed


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the read deadlines of ``deadlines``."""

    deadlines = Deadlines()  # set per server by Deadlines.protocol()

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = True  # reading a request line and headers
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.deadlines.header_timeout)

    def data_received(self, data: bytes) -> None:
        waiting = self._in_headers
        super().data_received(data)
        if waiting and self._in_headers:  # this chunk did not finish the headers
            self._header_bytes += len(data)
            limit = self.deadlines.header_limit
            if self._header_bytes > limit and not self.transport.is_closing():
                log.info("closing %s: request headers over %d bytes", self.client, limit)
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._deadline is None:  # a kept-alive connection's next request
            self._arm(self.deadlines.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        super().on_headers_complete()
        # Now the body's (a request without one completes at once, disarming it).
        if self.deadlines.body_timeout is not None:
            self._arm(self.deadlines.body_timeout)

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


def config(app: Any, deadlines: Deadlines, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app``: always httptools with ``deadlines``,
    whatever else is installed, and no server banner."""
    return uvicorn.Config(app, http=deadlines.protocol(), server_header=False, **options)


def serve(
    app: Any,
    deadlines: Deadlines,
    *,
    sockets: list[socket.socket] | None = None,
    **options: Any,
) -> None:
    """Run ``app`` until a signal stops it, on ``sockets`` or on the
    ``host``/``port`` in ``options``; exits with uvicorn's status 3 when the
    server could not start (a port in use, a bad certificate)."""
    server = uvicorn.Server(config(app, deadlines, **options))
    # uvicorn turns SIGINT into a shutdown; one arriving before its handler
    # is installed is the same request, not a crash (uvicorn.run does this too).
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(_STARTUP_FAILURE)
