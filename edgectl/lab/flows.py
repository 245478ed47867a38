"""Long-running flows through a lab gateway: a UDP stream, a TCP upload, a TCP download.

Used to show that a hold stops flows that were open before it: a ``Stream``
sends from one namespace to another, paced (one chunk a millisecond, so two
shared CPUs stay usable), and records on the receiving side when each chunk
arrived.  ``last_arrival`` is what a cut-off measurement needs: the moment
the last packet got through.  Every thread stops and every socket closes on
``close()``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Literal, Self

from edgectl.lab.netns import in_netns

Kind = Literal["udp", "tcp-up", "tcp-down"]
CHUNK = 512
PACE = 0.001  # seconds between chunks
_IDLE = 0.05  # a receiving thread re-checks the stop flag this often


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class Stream:
    """``client`` (in ``client_ns``) and ``server`` (in ``server_ns``) exchange a stream.

    ``udp``: client -> server datagrams, each echoed.  ``tcp-up``: the client connects and
    sends.  ``tcp-down``: the client connects and the server sends (a
    download: the held subscriber only sends ACKs).
    """

    def __init__(
        self,
        kind: Kind,
        client_ns: str,
        client: str,
        server_ns: str,
        server: str,
        port: int,
    ) -> None:
        self.kind = kind
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.received = 0
        self.last_arrival: float | None = None
        self.sent = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        family = _family(server)
        sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
        with in_netns(server_ns):
            listener = self._own(socket.socket(family, sock_type))
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((server, port))
        with in_netns(client_ns):
            client_sock = self._own(socket.socket(family, sock_type))
            client_sock.bind((client, 0))
        if kind == "udp":
            client_sock.connect((server, port))
            self._start(self._receive, listener)
            self._start(self._send, client_sock)
            return
        listener.listen(1)
        listener.settimeout(5)
        client_sock.settimeout(5)
        client_sock.connect((server, port))
        accepted, _ = listener.accept()
        self._own(accepted)
        sender, receiver = (client_sock, accepted) if kind == "tcp-up" else (accepted, client_sock)
        self._start(self._receive, receiver)
        self._start(self._send, sender)

    def _own(self, sock: socket.socket) -> socket.socket:
        self._sockets.append(sock)
        return sock

    def _start(self, target: object, sock: socket.socket) -> None:
        thread = threading.Thread(target=target, args=(sock,), daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _send(self, sock: socket.socket) -> None:
        # A held flow's TCP send buffer fills and send() would block: a short
        # timeout keeps the thread responsive to close().
        sock.settimeout(_IDLE)
        payload = b"x" * CHUNK
        while not self._stop.wait(PACE):
            try:
                sock.send(payload)
            except TimeoutError:
                continue
            except OSError:
                continue  # ICMP errors (UDP), a reset: keep trying as a flood would
            with self._lock:
                self.sent += 1

    def _receive(self, sock: socket.socket) -> None:
        sock.settimeout(_IDLE)
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.kind == "udp":
                # Echoed, as a game or VPN server answers: conntrack sees
                # replies, so the flow is established (a one-way UDP stream
                # stays "new" and meets the hold rules anyway).
                with contextlib.suppress(OSError):
                    sock.sendto(data[:16], peer)
            if not data and self.kind != "udp":
                return  # the peer closed
            now = time.monotonic()
            with self._lock:
                self.received += len(data)
                self.last_arrival = now

    def snapshot(self) -> tuple[int, float | None]:
        with self._lock:
            return self.received, self.last_arrival

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
