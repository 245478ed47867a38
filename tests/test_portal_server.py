"""The portal's HTTP protocol closes a connection whose request is not whole
in time, or whose headers are too large (a real uvicorn server on 127.0.0.1,
real sockets)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from edgectl.http_server import config
from edgectl.portal.server import deadlines
from edgectl.testing.wait import wait_until

DEADLINE = 0.3  # seconds: the test's server only


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config(hello, deadlines(DEADLINE), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    assert wait_until(lambda: bool(server.started), timeout=20), "uvicorn did not start"
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        listener.close()


def read_all(client: socket.socket) -> bytes:
    client.settimeout(10)  # far beyond the deadline: a hang fails, not passes
    data = b""
    while chunk := client.recv(4096):
        data += chunk
    return data


def test_a_half_sent_request_is_closed_unanswered(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: example.org\r\n")  # no blank line
        assert read_all(client) == b""


def test_a_silent_connection_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as client:
        assert read_all(client) == b""


def test_whole_requests_are_answered_also_on_a_kept_alive_connection(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.settimeout(10)
        for _ in range(2):
            client.sendall(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
            answer = b""
            while not answer.endswith(b"hello"):
                chunk = client.recv(4096)
                assert chunk, answer  # closed before the whole answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
        # The next request's first bytes start a new deadline.
        client.sendall(b"GET / HTTP/1.1\r\n")
        assert read_all(client) == b""


def test_oversized_headers_are_refused_with_431(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: example.org\r\nX-Pad: " + b"a" * 20_000)
        assert read_all(client).startswith(b"HTTP/1.1 431 ")
