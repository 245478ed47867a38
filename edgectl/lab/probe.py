"""Real TCP/UDP traffic from inside lab namespaces: listeners, connects, queries, rates.

Every socket is created inside its namespace through ``netns.in_netns`` and
keeps that namespace for life, so the listener thread can serve sockets of
any namespace without entering it.  Outcomes are classified the way a
client sees what nftables did to its SYN:

* ``reject with tcp reset`` -> RST -> ECONNREFUSED -> RESET.  Beware: an
  ICMP *port* unreachable (plain ``reject`` for IPv4) also surfaces as
  ECONNREFUSED, so it is RESET too.
* ``reject with icmp(x) admin-prohibited``/host/net unreachable -> EHOSTUNREACH,
  ENETUNREACH or (IPv6 admin-prohibited) EACCES -> UNREACHABLE, at once:
  client sockets set IP_RECVERR/IPV6_RECVERR (see ``_recverr``).
* ``drop`` -> nothing comes back -> TIMEOUT after ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import ipaddress
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Self, overload

from edgectl.lab.netns import in_netns

# Linux: defer the source-port choice from bind() to connect(), so many
# connections from one bound address need unique 4-tuples, not unique ports.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# <linux/in.h>, <linux/in6.h>; the socket module of 3.11 lacks them.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)

_UNREACHABLE_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM, errno.ENONET}
)
_BACKLOG = 4096
_UDP_MAX = 2048


class Outcome(enum.Enum):
    CONNECTED = "connected"
    RESET = "reset"  # ECONNREFUSED: TCP RST (or ICMP port unreachable)
    TIMEOUT = "timeout"  # nothing came back: dropped
    UNREACHABLE = "unreachable"  # ICMP unreachable / prohibited
    ANSWERED = "answered"  # UDP: the echo came back


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET if ipaddress.ip_address(address).version == 4 else socket.AF_INET6


def _canonical(address: str) -> str:
    return str(ipaddress.ip_address(address.split("%", 1)[0]))


def _classify(exc: OSError) -> Outcome:
    if isinstance(exc, TimeoutError):
        return Outcome.TIMEOUT
    if exc.errno == errno.ECONNREFUSED:
        return Outcome.RESET
    if exc.errno in _UNREACHABLE_ERRNOS:
        return Outcome.UNREACHABLE
    raise exc


def _recverr(sock: socket.socket) -> None:
    """Make ICMP errors wake a connecting socket at once.

    On a veth the ICMP error for a SYN is often processed while connect()
    still holds the socket lock; the IPv6 TCP stack then keeps it only as a
    "soft" error (TcpExtLockDroppedIcmps) and the connect hangs until the
    SYN retransmission a second later draws another ICMP.  With RECVERR the
    error is also queued on the socket's error queue, which raises POLLERR;
    the wait ends and SO_ERROR hands back the soft error.
    """
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def _client_socket(ns: str, dst: str, kind: socket.SocketKind, src: str | None) -> socket.socket:
    family = _family(dst)
    if src is not None and _family(src) != family:
        raise ValueError(f"source {src} and destination {dst} differ in family")
    with in_netns(ns):
        sock = socket.socket(family, kind)
    try:
        _recverr(sock)
        if src is not None:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src, 0))
    except BaseException:
        sock.close()
        raise
    return sock


@overload
def connect(
    ns: str,
    dst: str,
    port: int,
    *,
    src: str | None = ...,
    timeout: float = ...,
    keep_open: Literal[False] = ...,
) -> Outcome: ...


@overload
def connect(
    ns: str,
    dst: str,
    port: int,
    *,
    src: str | None = ...,
    timeout: float = ...,
    keep_open: Literal[True],
) -> tuple[Outcome, socket.socket | None]: ...


def connect(
    ns: str,
    dst: str,
    port: int,
    *,
    src: str | None = None,
    timeout: float = 1.0,
    keep_open: bool = False,
) -> Outcome | tuple[Outcome, socket.socket | None]:
    """Open a TCP connection from namespace ``ns`` (bound to ``src`` if given).

    With ``keep_open`` return ``(outcome, socket)``; the socket is the open
    connection when CONNECTED (the caller closes it), else None.
    """
    sock = _client_socket(ns, dst, socket.SOCK_STREAM, src)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            outcome = Outcome.CONNECTED
        except OSError as exc:
            outcome = _classify(exc)
    except BaseException:
        sock.close()
        raise
    if keep_open and outcome is Outcome.CONNECTED:
        return outcome, sock
    sock.close()
    return (outcome, None) if keep_open else outcome


def udp_query(
    ns: str,
    dst: str,
    port: int,
    *,
    src: str | None = None,
    timeout: float = 1.0,
    payload: bytes = b"edgectl-probe",
) -> Outcome:
    """Send one datagram and wait for its echo: ANSWERED, TIMEOUT or UNREACHABLE.

    The socket is connected, so an ICMP error (even port unreachable) comes
    back as an errno; for UDP all of them mean UNREACHABLE.
    """
    sock = _client_socket(ns, dst, socket.SOCK_DGRAM, src)
    with sock:
        sock.settimeout(timeout)
        sock.connect((dst, port))
        deadline = time.monotonic() + timeout
        try:
            sock.send(payload)
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                if sock.recv(_UDP_MAX) == payload:
                    return Outcome.ANSWERED
        except TimeoutError:
            return Outcome.TIMEOUT
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED or exc.errno in _UNREACHABLE_ERRNOS:
                return Outcome.UNREACHABLE
            raise


def connection_rate(
    ns: str,
    dst: str,
    port: int,
    seconds: float,
    max_connections: int,
    *,
    src: str | None = None,
    timeout: float = 1.0,
) -> float:
    """Successful TCP connects per second in a connect+close loop.

    Stops after ``max_connections`` attempts or ``seconds`` (plus at most one
    ``timeout``), whichever comes first.  Closes with RST (SO_LINGER 0) so
    the client leaves no TIME_WAIT behind and repeated runs do not run out of
    ports.  Failed attempts count against the bounds but not in the rate.
    """
    if seconds <= 0 or max_connections <= 0:
        raise ValueError("seconds and max_connections must be positive")
    family = _family(dst)
    linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # struct linger {1, 0}
    ok = 0
    # Enter the namespace once for the whole loop: the loop only creates
    # sockets, it runs nothing else that could be surprised by the namespace.
    with in_netns(ns):
        start = time.monotonic()
        deadline = start + seconds
        for _ in range(max_connections):
            now = time.monotonic()
            if now >= deadline:
                break
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                _recverr(sock)
                if src is not None:
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((src, 0))
                sock.settimeout(min(timeout, max(deadline - now, 0.001)))
                try:
                    sock.connect((dst, port))
                    ok += 1
                except OSError as exc:
                    _classify(exc)  # re-raises anything that is not a firewall verdict
        elapsed = time.monotonic() - start
    return ok / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class _Accepted:
    src: str
    local: str
    port: int


class Listener:
    """TCP (and UDP echo) servers in one namespace, served by one selector thread.

    ``hold=True`` keeps accepted connections open until ``release()`` or the
    peer closes (for concurrency caps); ``hold=False`` accepts and closes at
    once (for ``connection_rate``).  Counts are per source address.  All
    sockets are bound before the constructor returns, so a connect right
    after it can never race the listener.
    """

    def __init__(
        self,
        ns: str,
        addresses: Iterable[str],
        tcp_ports: Iterable[int] = (),
        *,
        udp_ports: Iterable[int] = (),
        hold: bool = True,
    ) -> None:
        self.ns = ns
        self.hold = hold
        self._lock = threading.Lock()
        self._accepted: Counter[_Accepted] = Counter()
        self._udp: Counter[str] = Counter()
        self._held: dict[socket.socket, _Accepted] = {}
        self._commands: list[Callable[[], None]] = []
        self._error: BaseException | None = None
        self._stop = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._servers: list[socket.socket] = []
        try:
            self._wake_r.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
            tcp = list(tcp_ports)
            udp = list(udp_ports)
            for address in addresses:
                for port in tcp:
                    self._serve(self._bind(address, port, socket.SOCK_STREAM), self._on_accept)
                for port in udp:
                    self._serve(self._bind(address, port, socket.SOCK_DGRAM), self._on_datagram)
        except BaseException:
            self._close_sockets()
            raise
        self._thread = threading.Thread(target=self._run, name=f"listener-{ns}", daemon=True)
        self._thread.start()

    def _bind(self, address: str, port: int, kind: socket.SocketKind) -> socket.socket:
        family = _family(address)
        with in_netns(self.ns):
            sock = socket.socket(family, kind)
        self._servers.append(sock)  # closed by _close_sockets even if bind fails
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(_BACKLOG)
        sock.setblocking(False)
        return sock

    def _serve(self, sock: socket.socket, handler: Callable[[socket.socket], None]) -> None:
        self._selector.register(sock, selectors.EVENT_READ, handler)

    # --- selector thread -------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop:
                for key, _ in self._selector.select(timeout=1.0):
                    key.data(key.fileobj)
        except BaseException as exc:  # surfaced by close()
            self._error = exc

    def _on_wake(self, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            sock.recv(4096)
        with self._lock:
            commands, self._commands = self._commands, []
        for command in commands:
            command()

    def _on_accept(self, server: socket.socket) -> None:
        local = server.getsockname()
        while True:  # drain the backlog: one wake-up may stand for many SYNs
            try:
                conn, peer = server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            record = _Accepted(_canonical(peer[0]), _canonical(local[0]), int(local[1]))
            with self._lock:
                self._accepted[record] += 1
                if self.hold:
                    self._held[conn] = record
            if not self.hold:
                conn.close()
                continue
            conn.setblocking(False)
            self._selector.register(conn, selectors.EVENT_READ, self._on_data)

    def _on_data(self, conn: socket.socket) -> None:
        # Data is discarded; an empty read or an error means the peer is gone.
        try:
            if conn.recv(4096):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        with self._lock:
            self._held.pop(conn, None)
        conn.close()

    def _on_datagram(self, sock: socket.socket) -> None:
        while True:
            try:
                data, peer = sock.recvfrom(_UDP_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. a queued ICMP error for an earlier echo
            with self._lock:
                self._udp[_canonical(peer[0])] += 1
            # The echo is best effort, like a real resolver's answer.
            with contextlib.suppress(OSError):
                sock.sendto(data, peer)

    def _call(self, command: Callable[[], None], timeout: float) -> None:
        """Run ``command`` on the selector thread and wait for it (bounded)."""
        done = threading.Event()

        def wrapped() -> None:
            try:
                command()
            finally:
                done.set()

        with self._lock:
            self._commands.append(wrapped)
        self._wake_w.send(b"x")
        if not done.wait(timeout):
            raise TimeoutError(f"listener in {self.ns} did not respond in {timeout}s")

    # --- public ----------------------------------------------------------

    def accepted(self, src: str | None = None, *, port: int | None = None) -> int:
        """Connections accepted so far (from ``src``, to ``port``)."""
        want = None if src is None else _canonical(src)
        with self._lock:
            return sum(
                n
                for r, n in self._accepted.items()
                if (want is None or r.src == want) and (port is None or r.port == port)
            )

    def open_connections(self, src: str | None = None, *, port: int | None = None) -> int:
        """Accepted connections still held open (from ``src``, to ``port``)."""
        want = None if src is None else _canonical(src)
        with self._lock:
            return sum(
                1
                for r in self._held.values()
                if (want is None or r.src == want) and (port is None or r.port == port)
            )

    def by_source(self) -> dict[str, int]:
        """Accepted TCP connections per source address."""
        out: Counter[str] = Counter()
        with self._lock:
            for r, n in self._accepted.items():
                out[r.src] += n
        return dict(out)

    def answered(self, src: str | None = None) -> int:
        """UDP datagrams echoed (to ``src``)."""
        with self._lock:
            return sum(self._udp.values()) if src is None else self._udp[_canonical(src)]

    def release(self, timeout: float = 2.0) -> None:
        """Close every held connection (the peers see EOF)."""

        def close_all() -> None:
            for conn in list(self._held):
                self._drop(conn)

        self._call(close_all, timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (bounded wait) and close every socket; idempotent."""
        if self._thread.is_alive():
            self._stop = True
            self._wake_w.send(b"x")
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"listener thread in {self.ns} did not stop in {timeout}s")
        self._close_sockets()
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"listener in {self.ns} failed") from error

    def _close_sockets(self) -> None:
        with self._lock:
            held = list(self._held)
            self._held.clear()
        for sock in [*held, *self._servers, self._wake_r, self._wake_w]:
            sock.close()
        self._servers.clear()
        self._selector.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
