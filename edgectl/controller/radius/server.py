"""The accounting server: UDP sockets, a bounded queue, batched commits.

Two threads, so decoding the next packets overlaps the commit of the last:

* the receiver reads every listening socket, drops what it must not answer
  (unknown NAS, bad authenticator, malformed: counted by reason), answers a
  retransmission from the replay cache, and queues the rest;
* the committer takes what is queued (up to ``max_batch``, waiting at most
  ``BATCH_WAIT`` for more), hands all of it to the store in ONE call, and
  only then sends the Accounting-Responses (RFC 2866: the NAS retransmits
  until answered, so an answer must mean "stored").

Threads rather than the event loop: a commit blocks (SQLite fsync), and the
HTTP side's loop must not wait on it.  The store's own commit listeners wake
agents' long-polls (``Notifier.publish`` is thread-safe), as for REST writes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgectl.controller.errors import Invalid
from edgectl.controller.radius import codec
from edgectl.controller.radius.config import Client, RadiusSettings
from edgectl.controller.radius.events import KINDS, Unusable, to_event
from edgectl.controller.radius.stats import Stats, StatsView
from edgectl.controller.store.feed import AccountingEvent, EventOutcome

log = logging.getLogger(__name__)

# How long the committer waits for more packets once it has one: a lone Start
# is answered within this (plus the commit), a storm fills batches anyway.
BATCH_WAIT = 0.002
# Datagrams read from one socket before the others get a turn.
BURST = 256
# Receive buffer asked of the kernel (capped by net.core.rmem_max): what a
# burst may queue while the receiver thread waits for the GIL.
RECEIVE_BUFFER = 8 * 1024 * 1024
# Replies kept for retransmissions, at most (~100 bytes each).
REPLAY_ENTRIES = 200_000
# Source addresses remembered as known NAS, at most (a NAS prefix may hold many).
NAS_CACHE = 4096
# After a failed commit, wait this long before the next: the packets are
# unanswered and will come again; hammering a database that is down helps nobody.
FAILURE_PAUSE = 0.5

ApplyEvents = Callable[[Sequence[AccountingEvent]], Sequence[EventOutcome]]


@dataclass(frozen=True, slots=True)
class Feed:
    """The store behind the server; the unit tier passes fakes."""

    apply: ApplyEvents
    open_sessions: Callable[[], Mapping[str, int]] | None = None


@dataclass(slots=True)
class Pending:
    key: tuple[str, int, bytes]  # NAS name, Identifier, Request Authenticator
    sock: socket.socket
    peer: Any
    reply: bytes
    kind: str
    event: AccountingEvent | None
    outcome: str | None  # decided without the store (an unusable packet)


def kind_label(status_type: int) -> str:
    return KINDS.get(status_type, "other")


class ReplayCache:
    """Answers already sent, by (NAS, Identifier, authenticator), for ``window`` seconds,
    plus the keys queued or being committed (a retransmission of one of those is
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


def bind(listen: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """One UDP socket per listen address; a failure names the address."""
    sockets: list[socket.socket] = []
    try:
        for host, port in listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(sock)
            if family == socket.AF_INET6:
                # "0.0.0.0:1813" and "[::]:1813" together must both bind.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            try:
                sock.bind((host, port))
            except OSError as error:
                shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
                raise Invalid(
                    "controller.radius.listen", f"cannot listen on {shown}: {error.strerror}"
                ) from None
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class RadiusServer:
    """The accounting server over ``feed``; ``start`` binds nothing (``bind`` did)."""

    def __init__(
        self,
        settings: RadiusSettings,
        feed: Feed,
        sockets: Sequence[socket.socket],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._settings = settings
        self._feed = feed
        self._sockets = list(sockets)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._words = codec.dictionary()
        self._queue: queue.Queue[Pending] = queue.Queue(settings.max_queue)
        self._replay = ReplayCache(settings.replay_window)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Client by source address: matching the clients file's prefixes for
        # every datagram was a tenth of receiving one.  Only known NAS are
        # kept (the receiver thread's own), so spoofed sources cannot grow it.
        self._nas: dict[str, Client] = {}
        self.stats = Stats()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self._sockets]

    def view(self) -> StatsView:
        return self.stats.view(self._queue.qsize())

    def open_sessions(self) -> Mapping[str, int]:
        return self._feed.open_sessions() if self._feed.open_sessions is not None else {}

    def start(self) -> None:
        for name, target in (("radius-receive", self._receive), ("radius-commit", self._commit)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        shown = ", ".join(f"{host}:{port}" for host, port in self.addresses)
        log.info("RADIUS accounting on %s (%d clients)", shown, len(self._settings.clients.entries))

    def stop(self) -> None:
        """Stop both threads and close the sockets.  Packets still queued stay
        unanswered: their NAS retransmits to the next controller."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        for sock in self._sockets:
            sock.close()

    # -- receiving ------------------------------------------------------------------

    def _receive(self) -> None:
        with selectors.DefaultSelector() as selector:
            for listening in self._sockets:
                selector.register(listening, selectors.EVENT_READ, listening)
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.2):
                    sock: socket.socket = key.data
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
                            self.stats.drop("internal_error")

    def handle(self, sock: socket.socket, data: bytes, peer: Any) -> None:
        """One datagram: dropped, answered from the replay cache, or queued."""
        client = self._nas.get(peer[0])
        if client is None:
            client = self._settings.clients.find(peer[0])
            if client is None:
                self.stats.drop("unknown_nas")
                return
            if len(self._nas) >= NAS_CACHE:
                self._nas.clear()
            self._nas[peer[0]] = client
        try:
            packet = codec.decode(data, client.secret, self._settings.account.key, self._words)
        except codec.Dropped as dropped:
            log.debug("RADIUS from %s (%s) dropped: %s", client.name, peer[0], dropped)
            self.stats.drop(dropped.reason)
            return
        kind = kind_label(packet.status_type)
        key = (client.name, packet.identifier, packet.authenticator)
        claimed = self._replay.claim(key, time.monotonic())
        if claimed is False:
            self.stats.packet(kind, "retransmit_in_flight")
            return
        if claimed is not True:
            assert isinstance(claimed, bytes)
            self.stats.packet(kind, "retransmit")  # counted first: the answer ends a test's wait
            self._send(sock, claimed, peer)
            return
        try:
            event: AccountingEvent | None = to_event(
                client.name, packet, self._clock(), self._settings.account
            )
            outcome = None
        except Unusable as unusable:
            log.debug("RADIUS from %s: %s", client.name, unusable.detail)
            event, outcome = None, unusable.outcome
        try:
            self._queue.put_nowait(Pending(key, sock, peer, packet.reply, kind, event, outcome))
        except queue.Full:
            self._replay.release(key)
            self.stats.drop("queue_full")

    def _send(self, sock: socket.socket, reply: bytes, peer: Any) -> None:
        try:
            sock.sendto(reply, peer)
        except OSError as error:
            # The NAS retransmits and gets the cached answer.
            log.debug("sendto %s: %s", peer[0], error)
            self.stats.drop("send_failed")

    # -- committing -----------------------------------------------------------------

    def _take(self) -> list[Pending]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + BATCH_WAIT
        while len(batch) < self._settings.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _commit(self) -> None:
        while not self._stopping.is_set():
            batch = self._take()
            if batch:
                try:
                    self.commit(batch)
                except Exception:
                    log.exception("RADIUS batch of %d not answered", len(batch))
                    for pending in batch:
                        self._replay.release(pending.key)
                    self.stats.drop("commit_failed", len(batch))
                    self._stopping.wait(FAILURE_PAUSE)

    def commit(self, batch: Sequence[Pending]) -> None:
        """Store ``batch`` in one call, then answer every packet of it."""
        events = [pending.event for pending in batch if pending.event is not None]
        outcomes: Sequence[EventOutcome] = []
        if events:
            started = time.monotonic()
            outcomes = self._feed.apply(events)
            self.stats.commit(time.monotonic() - started)
            if len(outcomes) != len(events):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(events)} events")
        answered = []
        counts: Counter[tuple[str, str]] = Counter()
        results = iter(outcomes)
        for pending in batch:
            outcome = pending.outcome if pending.event is None else next(results).status
            counts[pending.kind, outcome or "applied"] += 1
            answered.append((pending.key, pending.reply))
        self.stats.packets_counted(counts)
        # Cached before any answer leaves, so a retransmission racing the
        # answer finds the reply rather than an empty in-flight slot.
        self._replay.answered(answered, time.monotonic())
        for pending in batch:
            self._send(pending.sock, pending.reply, pending.peer)
