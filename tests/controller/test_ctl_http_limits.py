"""What a client costs the controller before it proves anything, over real
HTTP (uvicorn as `edgectl controller` runs it): bodies are read only after the
token, never past the cap (issue 9, item 6), half-sent requests are cut off
and connections are capped (item 7), no server banner (item 10)."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from ctl_server import Server, running

from edgectl.controller.settings import Settings
from edgectl.testing.wait import wait_until

MB = 1024 * 1024


def read_head(sock: socket.socket, timeout: float) -> bytes:
    """The response's status line and headers, or whatever came before the deadline."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def status_of(head: bytes) -> int:
    assert head.startswith(b"HTTP/1.1 "), head[:200]
    return int(head.split()[1])


def closed_by_peer(sock: socket.socket, timeout: float = 0.0) -> bool:
    """True once the server has closed (EOF or reset); waits up to ``timeout`` for it.

    Whatever the server sent before is read and dropped."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return False
    try:
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


class Sender(threading.Thread):
    """Streams a body of ``size`` bytes, counting what the kernel took, until refused."""

    def __init__(self, sock: socket.socket, size: int, *, chunked: bool = False) -> None:
        super().__init__(daemon=True)
        self.sock, self.size, self.chunked = sock, size, chunked
        self.sent = 0

    def run(self) -> None:
        piece = b"x" * 65536
        try:
            while self.sent < self.size:
                data = b"%x\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece
                self.sock.sendall(data)
                self.sent += len(piece)
            if self.chunked:
                self.sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: what we wanted


def post_head(path: str, *, token: str | None, length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: controller", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    chunked = "Transfer-Encoding: chunked"
    lines.append(f"Content-Length: {length}" if length is not None else chunked)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_unauthenticated_huge_body_is_refused_before_it_is_read(
    tmp_path: Path, chunked: bool
) -> None:
    with running(tmp_path) as server:
        before = server.peak_rss()
        size = 100 * MB
        with server.connect() as sock:
            length = None if chunked else size
            sock.sendall(post_head("/v1/sessions/bulk", token=None, length=length))
            sender = Sender(sock, size, chunked=chunked)
            sender.start()
            head = read_head(sock, timeout=60)
            taken = sender.sent
            sender.join(timeout=60)
        # Over the cap by its Content-Length (413), or unauthenticated (401):
        # either way refused before the body is read.
        assert status_of(head) == (401 if chunked else 413), head
        # Answered before the body was sent (before: after all 100 MB were read).
        assert taken < size // 4, taken
        grown = server.peak_rss() - before
        assert grown < 24 * MB, f"peak memory grew {grown / MB:.0f} MB"


def test_over_cap_content_length_is_413_at_once(tmp_path: Path) -> None:
    with running(tmp_path) as server, server.connect() as sock:
        sock.sendall(post_head("/v1/sessions/bulk", token=server.token, length=1 << 30))
        head = read_head(sock, timeout=5)  # not a byte of the body was sent
        assert status_of(head) == 413, head
        assert b"max_body_bytes" in head or b"connection: close" in head.lower()
        wait_until(lambda: closed_by_peer(sock, 0.1), timeout=5, what="connection left open")


def test_chunked_body_stops_at_the_cap_and_small_ones_pass(tmp_path: Path) -> None:
    with running(tmp_path, max_body_bytes=MB) as server:
        before = server.peak_rss()
        size = 200 * MB
        with server.connect() as sock:
            sock.sendall(post_head("/v1/sessions/bulk", token=server.token, length=None))
            sender = Sender(sock, size, chunked=True)
            sender.start()
            head = read_head(sock, timeout=60)
            taken = sender.sent
            sender.join(timeout=60)
        assert status_of(head) == 413, head
        assert taken < size // 4, taken
        grown = server.peak_rss() - before
        assert grown < 24 * MB, f"peak memory grew {grown / MB:.0f} MB"
        # A body under the cap, chunked too, still reaches the handler whole.
        body = json.dumps({"name": "dyn", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]})
        with server.connect() as sock:
            encoded = body.encode()
            sock.sendall(post_head("/v1/pools", token=server.token, length=None))
            sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(encoded), encoded))
            assert status_of(read_head(sock, timeout=10)) == 201


def test_default_cap_fits_the_largest_real_request() -> None:
    """50,000 bindings (the bulk cap) with RADIUS-style user names, and with the
    longest account ids the API takes, fit under the default max_body_bytes."""

    def bulk(account: str) -> int:
        bindings = [
            {"account": account, "ipv4": "100.100.100.100", "ipv6": "2001:db8:aaaa:bbbb::/56"}
            for _ in range(50_000)
        ]
        return len(json.dumps({"bindings": bindings}, indent=2))

    cap = Settings().max_body_bytes
    assert bulk("user000001@dsl.isp-example.net") < cap / 2
    assert bulk("x" * 200) < cap


def test_half_sent_requests_are_cut_off_and_connections_capped(tmp_path: Path) -> None:
    with running(tmp_path, header_timeout=1.0, body_timeout=2.0, max_connections=64) as server:
        stalled = [server.connect() for _ in range(200)]
        for sock in stalled:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: controller\r\nX-Slow: ")
        # Full house: a new request is refused at once instead of queueing.
        assert httpx.get(f"{server.base}/healthz", timeout=5).status_code == 503
        started = time.monotonic()
        wait_until(
            lambda: all(closed_by_peer(sock) for sock in stalled),
            timeout=15,
            what="half-sent requests were never timed out",
            interval=0.1,
        )
        assert time.monotonic() - started < 10
        for sock in stalled:
            sock.close()
        wait_until(
            lambda: httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200,
            timeout=10,
            what="the controller did not recover",
        )
        assert_drip_is_cut_off(server)
        assert_half_body_is_cut_off(server)


def assert_drip_is_cut_off(server: Server) -> None:
    """One header byte every 0.2 s: the deadline is a total, not an idle gap."""
    request = b"GET /healthz HTTP/1.1\r\nHost: controller\r\nX-Drip: " + b"a" * 200
    with server.connect() as sock:
        started = time.monotonic()
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            if closed_by_peer(sock, timeout=0.2):
                break
        assert closed_by_peer(sock, timeout=5), "a dripping sender kept its connection"
        assert time.monotonic() - started < 5  # the drip alone would take 40 s


def assert_half_body_is_cut_off(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(post_head("/v1/pools", token=server.token, length=100) + b'{"name": ')
        started = time.monotonic()
        assert closed_by_peer(sock, timeout=10), "a half-sent body held its connection"
        assert time.monotonic() - started < 6


def test_no_server_banner_and_safe_headers_over_http(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        for path in ("/healthz", "/v1/pools", "/docs"):
            response = httpx.get(f"{server.base}{path}", headers=headers, timeout=10)
            assert response.status_code == 200, path
            assert "server" not in response.headers, (path, response.headers)
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-store"


def test_oversized_request_headers_are_refused_before_the_deadline(tmp_path: Path) -> None:
    """Request line and headers are capped at 16 KiB (the deadline alone would let a
    sender pile up whatever it can send in ``header_timeout``); 12 KiB still pass."""
    with running(tmp_path, header_timeout=60.0) as server:
        with server.connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: controller\r\nX-Big: " + b"a" * 20_000)
            started = time.monotonic()
            assert status_of(read_head(sock, timeout=10)) == 431
            assert closed_by_peer(sock, timeout=10)
            assert time.monotonic() - started < 10  # the cap, not the 60 s deadline
        filler = {"X-Filler": "a" * 12_000}
        assert httpx.get(f"{server.base}/healthz", headers=filler, timeout=10).status_code == 200
