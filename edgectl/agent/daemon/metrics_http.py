"""The agent's Prometheus text endpoint: ``GET /metrics`` (stdlib http.server: no new dependency).

Its own module, imported only when ``metrics_listen`` is set: http.server
(and what it imports) is ~10 ms of an agent's start, before its first
commit, that an agent without the endpoint need not pay.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from edgectl.agent.daemon.metrics import Counters, Metrics


class MetricsServer:
    """``GET /metrics`` on its own thread; ``counters`` is called per scrape."""

    def __init__(
        self, address: tuple[str, int], metrics: Metrics, counters: Callable[[], Counters]
    ) -> None:
        handler = type(
            "Handler", (_Handler,), {"metrics": metrics, "counters": staticmethod(counters)}
        )
        family_server = _V6Server if ":" in address[0] else ThreadingHTTPServer
        self._server = family_server(address, handler)
        self._server.daemon_threads = True
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _V6Server(ThreadingHTTPServer):
    import socket as _socket

    address_family = _socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    metrics: ClassVar[Metrics]
    counters: ClassVar[Callable[[], Counters]]

    def do_GET(self) -> None:
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        try:
            counters = type(self).counters()
        except Exception:  # a kernel hiccup must not hide the agent's own metrics
            counters = {}
        body = self.metrics.render(counters).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every 15 s would drown the agent's log
