"""Serve the portal with uvicorn (uvicorn enters the portal here only):
httptools, with a request deadline.

The portal faces the walled garden's subscribers, infected machines among
them.  uvicorn times out only the idle gap between keep-alive requests: a
client that opens a connection and sends half a request (or dribbles a byte
a second) would hold it, and its memory, for ever.  Here a request must be
complete ``request_timeout`` seconds after its connection opened, or after
its first byte on a kept-alive connection, else the connection is closed.
The deadline is a total: more bytes do not move it.  (The controller's
server does the same, with a deadline for the headers and one for the body:
edgectl/controller/server.py.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


class TimedHttpToolsProtocol(HttpToolsProtocol):
    request_timeout = 10.0  # set per server by timed_protocol()

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a kept-alive connection's next request
            self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closing %s: no whole request in %.0f s", self.client, self.request_timeout)
            self.transport.close()


def timed_protocol(request_timeout: float) -> type[TimedHttpToolsProtocol]:
    """The protocol class with this deadline (uvicorn takes a class)."""

    class Timed(TimedHttpToolsProtocol):
        pass

    Timed.request_timeout = request_timeout
    return Timed


def serve(app: Any, listener: socket.socket) -> None:
    """Run ``app`` on ``listener`` until a signal stops it."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            # The gateway DNATs to us: the peer address is the subscriber's own.
            proxy_headers=False,
            timeout_keep_alive=5,
            # httptools parses requests in C: the portal's own share of a notice
            # fell from ~0.9 to ~0.45 ms of CPU with it (bench/portal_notices.py);
            # with a deadline for each request (half-sent requests are closed).
            http=TimedHttpToolsProtocol,
        )
    )
    server.run(sockets=[listener])
