"""Serve the portal over HTTP, with a deadline for each whole request.

The portal faces the walled garden's subscribers, infected machines among
them: a request must be complete ``REQUEST_TIMEOUT`` seconds after its
connection opened, or after its first byte on a kept-alive connection, else
the connection is closed (edgectl/http_server.py; the deadline is a total:
more bytes do not move it).  Headers over 16 KiB are refused there too.
"""

from __future__ import annotations

import socket
from typing import Any

from edgectl.http_server import Deadlines
from edgectl.http_server import serve as serve_http

REQUEST_TIMEOUT = 10.0  # seconds: a notice page request is a few hundred bytes


def deadlines(request_timeout: float = REQUEST_TIMEOUT) -> Deadlines:
    """One deadline for the whole request (a portal request has no body to wait for)."""
    return Deadlines(header_timeout=request_timeout, body_timeout=None)


def serve(app: Any, listener: socket.socket) -> None:
    """Run ``app`` on ``listener`` until a signal stops it."""
    serve_http(
        app,
        deadlines(),
        sockets=[listener],
        log_level="warning",
        access_log=False,
        # The gateway DNATs to us: the peer address is the subscriber's own.
        proxy_headers=False,
        timeout_keep_alive=5,
    )
