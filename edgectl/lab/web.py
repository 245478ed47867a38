"""Plain HTTP in lab namespaces: a client bound to a subscriber's address and
a tiny server that says who it is.

The steering tests must see, over real TCP, *which* host answered a request
sent to some outside address: the portal (DNAT) or the real server.  The
standard library is enough; a socket opened inside a namespace stays there.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edgectl.lab.netns import in_netns
from edgectl.lab.probe import Outcome, connect


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: str


def http_request(
    ns: str,
    dst: str,
    port: int,
    *,
    src: str | None = None,
    path: str = "/",
    host: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 2.0,
) -> Reply | Outcome:
    """One HTTP/1.0 request from ``ns``; the Reply, or why no connection opened."""
    outcome, sock = connect(ns, dst, port, src=src, timeout=timeout, keep_open=True)
    if sock is None:
        return outcome
    with sock:
        lines = [f"{method} {path} HTTP/1.0", f"Host: {host or dst}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), parsed, payload.decode("utf-8", "replace"))


@contextmanager
def text_server(ns: str, address: str, port: int, text: str) -> Iterator[None]:
    """Serve ``text`` to every GET on ``address:port`` inside ``ns``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    family_server = _server_class(address)
    with in_netns(ns):
        server = family_server((address, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _server_class(address: str) -> type[ThreadingHTTPServer]:
    if ":" not in address:
        return ThreadingHTTPServer

    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return V6
