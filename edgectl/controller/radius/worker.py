"""The feed's datagram side, in a process of its own (``python -m`` this module).

It reads the listening sockets the controller bound (inherited descriptors),
drops what must not be answered (unknown NAS, bad authenticator, malformed:
counted by reason), answers a retransmission from the replay cache, and hands
the rest to the controller as decoded events, a burst of datagrams per
message.  The controller commits them (its store, its long-poll wake-ups) and
says how many of each burst are committed; only then does this process send
their Accounting-Responses (RFC 2866: an answer means "stored").

Why a process: in the controller, decoding and answering ran on a thread
that took the interpreter lock from the committer around every datagram
(each ``recvfrom``/``sendto`` releases it); here the two run on two cores
and meet once per burst.

It never outlives the controller: the kernel kills it when the controller
thread that started it ends (``PR_SET_PDEATHSIG``), and it exits when the
control channel closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import pickle
import selectors
import signal
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from edgectl.controller.accounting import AccountingEvent
from edgectl.controller.radius import codec
from edgectl.controller.radius.config import Client, RadiusSettings
from edgectl.controller.radius.events import KINDS, Unusable, to_event

log = logging.getLogger(__name__)

# Datagrams read from one socket before the others (and the controller's
# answers) get a turn.
BURST = 256
# Replies kept for retransmissions, at most (~100 bytes each).
REPLAY_ENTRIES = 200_000
# Source addresses remembered as known NAS, at most (a NAS prefix may hold many).
NAS_CACHE = 4096
# Counters are sent to the controller at most this often (its /metrics).
STATS_INTERVAL = 0.05
PR_SET_PDEATHSIG = 1

# One event as it crosses the channel: AccountingEvent's fields as a tuple
# (pickling the dataclass goes through Python-level __getstate__, a tuple of
# builtins does not).
Wire = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Setup:
    """What the controller sends first: the socket descriptors and settings."""

    settings: RadiusSettings
    fds: tuple[int, ...]
    parent: int
    log_level: int


def to_wire(event: AccountingEvent) -> Wire:
    return (
        event.source,
        event.kind,
        event.at,
        event.session_id,
        event.account,
        tuple(event.ipv4) if event.ipv4 is not None else None,
        tuple(event.ipv6) if event.ipv6 is not None else None,
        event.session_time,
    )


def kind_label(status_type: int) -> str:
    return KINDS.get(status_type, "other")


class ReplayCache:
    """Answers already sent, by (NAS, Identifier, authenticator), for ``window`` seconds,
    plus the keys with the controller (a retransmission of one of those is
    dropped: the original's answer is on its way)."""

    def __init__(self, window: float, entries: int = REPLAY_ENTRIES) -> None:
        self._window = window
        self._entries = entries
        self._replies: OrderedDict[tuple[str, int, bytes], tuple[float, bytes]] = OrderedDict()
        self._in_flight: set[tuple[str, int, bytes]] = set()
        self._lock = threading.Lock()

    def claim(self, key: tuple[str, int, bytes], now: float) -> bytes | bool:
        """The cached reply; True if ``key`` is new (now in flight); False if in flight."""
        with self._lock:
            cached = self._replies.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
            if key in self._in_flight:
                return False
            self._in_flight.add(key)
            return True

    def release(self, key: tuple[str, int, bytes]) -> None:
        with self._lock:
            self._in_flight.discard(key)

    def answered(self, items: Sequence[tuple[tuple[str, int, bytes], bytes]], now: float) -> None:
        expires = now + self._window
        with self._lock:
            for key, reply in items:
                self._in_flight.discard(key)
                self._replies[key] = (expires, reply)
                self._replies.move_to_end(key)
            while self._replies:
                oldest_key, (oldest_expires, _) = next(iter(self._replies.items()))
                if oldest_expires > now and len(self._replies) <= self._entries:
                    break
                del self._replies[oldest_key]


@dataclass(slots=True)
class Waiting:
    """A packet with the controller: what to send once it is committed."""

    key: tuple[str, int, bytes]  # NAS name, Identifier, Request Authenticator
    sock: socket.socket
    peer: Any
    reply: bytes


class Worker:
    """Receives, checks, decodes and answers; ``conn`` is the controller's channel.

    The controller asks for work when its committer is idle, so one message
    each way carries a whole commit however the datagrams trickled in (a
    message per datagram would hand the controller's interpreter lock from
    the thread reading them to the committer per datagram again).

    To the controller (pickled tuples): ``("ready",)`` once, ``("batch", seq, [(kind, wire event |
    None, outcome | None), ...])`` when it asked, and ``("stats", {(kind,
    outcome): n}, {reason: n}, queued)`` at most every ``STATS_INTERVAL``.
    From it: ``("answer", [(seq, committed)], want)``: batch ``seq`` is stored
    (``committed`` true: answer its packets) or not (forget them: their NAS
    retransmits), and it takes up to ``want`` packets next (0: not now).
    """

    def __init__(
        self, settings: RadiusSettings, sockets: Sequence[socket.socket], conn: Connection
    ) -> None:
        self._settings = settings
        self._sockets = list(sockets)
        self._conn = conn
        self._words = codec.dictionary()
        self._replay = ReplayCache(settings.replay_window)
        # Client by source address: matching the clients file's prefixes for
        # every datagram was a tenth of receiving one.  Only known NAS are
        # kept, so spoofed sources cannot grow it.
        self._nas: dict[str, Client] = {}
        # Decoded, not yet sent (at most max_queue: beyond, the NAS retransmits).
        self._queue: list[tuple[tuple[str, Wire | None, str | None], Waiting]] = []
        self._want = 0
        self._sent: dict[int, list[Waiting]] = {}
        self._seq = 0
        self._packets: Counter[tuple[str, str]] = Counter()
        self._dropped: Counter[str] = Counter()
        self._queued_shown = 0
        self._stats_sent = 0.0

    def run(self) -> None:
        """Until the controller closes the channel."""
        with selectors.DefaultSelector() as selector:
            for listening in self._sockets:
                selector.register(listening, selectors.EVENT_READ, listening)
            selector.register(self._conn.fileno(), selectors.EVENT_READ, None)
            while True:
                timeout = STATS_INTERVAL if self._stats_due() else 1.0
                for key, _ in selector.select(timeout=timeout):
                    if key.data is None:
                        if not self._answers():
                            return
                    else:
                        self._receive(key.data)
                if self._want and self._queue:
                    self._send_batch()
                if self._stats_due():
                    self._send_stats()

    # -- receiving ------------------------------------------------------------------

    def _receive(self, sock: socket.socket) -> None:
        for _ in range(BURST):
            try:
                data, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                # e.g. ECONNREFUSED queued by an earlier reply's ICMP error.
                log.debug("recvfrom: %s", error)
                break
            try:
                self.handle(sock, data, peer)
            except Exception:  # one packet must never stop the feed
                log.exception("RADIUS packet from %s not handled", peer[0])
                self._dropped["internal_error"] += 1

    def handle(self, sock: socket.socket, data: bytes, peer: Any) -> None:
        """One datagram: dropped, answered from the replay cache, or queued."""
        client = self._nas.get(peer[0])
        if client is None:
            client = self._settings.clients.find(peer[0])
            if client is None:
                self._dropped["unknown_nas"] += 1
                return
            if len(self._nas) >= NAS_CACHE:
                self._nas.clear()
            self._nas[peer[0]] = client
        try:
            packet = codec.decode(data, client.secret, self._settings.account.key, self._words)
        except codec.Dropped as dropped:
            log.debug("RADIUS from %s (%s) dropped: %s", client.name, peer[0], dropped)
            self._dropped[dropped.reason] += 1
            return
        kind = kind_label(packet.status_type)
        key = (client.name, packet.identifier, packet.authenticator)
        claimed = self._replay.claim(key, time.monotonic())
        if claimed is False:
            self._packets[kind, "retransmit_in_flight"] += 1
            return
        if claimed is not True:
            assert isinstance(claimed, bytes)
            self._packets[kind, "retransmit"] += 1
            self._send(sock, claimed, peer)
            return
        if len(self._queue) >= self._settings.max_queue:
            self._replay.release(key)
            self._dropped["queue_full"] += 1
            return
        item: tuple[str, Wire | None, str | None]
        try:
            event = to_event(client.name, packet, datetime.now(UTC), self._settings.account)
            item = (kind, to_wire(event), None)
        except Unusable as unusable:
            log.debug("RADIUS from %s: %s", client.name, unusable.detail)
            item = (kind, None, unusable.outcome)
        self._queue.append((item, Waiting(key, sock, peer, packet.reply)))

    def _send_batch(self) -> None:
        taken, self._queue = self._queue[: self._want], self._queue[self._want :]
        self._seq += 1
        self._sent[self._seq] = [waiting for _, waiting in taken]
        items = [item for item, _ in taken]
        self._conn.send_bytes(pickle.dumps(("batch", self._seq, items), protocol=5))
        self._want = 0

    # -- answering ------------------------------------------------------------------

    def _answers(self) -> bool:
        """Every answer the controller has sent; False once it closed the channel."""
        while True:
            try:
                if not self._conn.poll(0):
                    return True
                _, answers, want = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                return False
            for seq, committed in answers:
                self._answer(self._sent.pop(seq, []), committed)
            self._want = want

    def _answer(self, waiting: list[Waiting], committed: bool) -> None:
        if not committed:
            for item in waiting:
                self._replay.release(item.key)
            return
        # Cached before any answer leaves, so a retransmission that crosses the
        # answer finds the reply rather than an empty in-flight slot.
        self._replay.answered([(item.key, item.reply) for item in waiting], time.monotonic())
        for item in waiting:
            self._send(item.sock, item.reply, item.peer)

    def _send(self, sock: socket.socket, reply: bytes, peer: Any) -> None:
        try:
            sock.sendto(reply, peer)
        except OSError as error:
            # The NAS retransmits and gets the cached answer.
            log.debug("sendto %s: %s", peer[0], error)
            self._dropped["send_failed"] += 1

    def _stats_due(self) -> bool:
        return bool(self._packets or self._dropped) or len(self._queue) != self._queued_shown

    def _send_stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_sent < STATS_INTERVAL:
            return
        queued = len(self._queue)
        message = ("stats", dict(self._packets), dict(self._dropped), queued)
        self._conn.send_bytes(pickle.dumps(message, protocol=5))
        self._packets.clear()
        self._dropped.clear()
        self._queued_shown = queued
        self._stats_sent = now


def die_with_parent(parent: int) -> None:
    """SIGKILL when the controller's thread that started us ends (Linux), and
    exit now if the controller is already gone (it died before the prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:
        raise SystemExit(0)


def main(argv: Sequence[str]) -> int:
    conn = Connection(int(argv[1]))
    try:
        setup: Setup = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return 0  # the controller went away before it said anything
    logging.basicConfig(
        level=setup.log_level, format="%(asctime)s %(levelname)s radius-worker: %(message)s"
    )
    die_with_parent(setup.parent)
    # The controller handles Ctrl-C and stops us through the channel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sockets = [socket.socket(fileno=fd) for fd in setup.fds]
    for sock in sockets:
        sock.setblocking(False)
    worker = Worker(setup.settings, sockets, conn)
    # The modules and the dictionary live as long as the process: kept out of
    # full collections, which the per-packet allocations trigger.
    gc.collect()
    gc.freeze()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        conn.send_bytes(pickle.dumps(("ready",), protocol=5))
        worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
