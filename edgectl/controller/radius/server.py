"""The accounting server: a worker process on the sockets, batched commits here.

* The worker process (``worker.py``) reads the listening sockets, drops what
  it must not answer, answers retransmissions from its replay cache, and
  queues the decoded events (at most ``max_queue``: beyond, the NAS's
  retransmission is the back-pressure).
* The committer asks the worker for what it has queued (up to
  ``max_batch``), hands all of it to the store in ONE call, and only then
  tells the worker the batch is committed, which it then answers (RFC 2866:
  the NAS retransmits until answered, so an answer must mean "stored"), and
  asks for the next.  While one batch commits, the worker decodes the next.
* The reader thread takes the worker's messages (batches, counters) and
  restarts the worker if it dies.

The store stays in this process: its commit listeners wake agents'
long-polls (``Notifier.publish`` is thread-safe), as for REST writes.  A
thread, not the event loop, commits: a commit blocks (SQLite fsync).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from edgectl.controller.accounting import AccountingEvent, EventOutcome
from edgectl.controller.errors import Invalid
from edgectl.controller.radius.config import RadiusSettings
from edgectl.controller.radius.stats import Stats, StatsView
from edgectl.controller.radius.worker import Setup, Wire
from edgectl.model import Prefix

log = logging.getLogger(__name__)

# Receive buffer asked of the kernel (capped by net.core.rmem_max): what a
# burst may queue while the worker is busy.
RECEIVE_BUFFER = 8 * 1024 * 1024
# After a failed commit, wait this long before the next: the packets are
# unanswered and will come again; hammering a database that is down helps nobody.
FAILURE_PAUSE = 0.5
# A worker that dies sooner than this after its start is restarted only after
# this pause (a worker that cannot start must not spin the controller).
RESTART_PAUSE = 1.0
# How long a stopping worker has to exit before it is killed.
STOP_GRACE = 2.0
# How long ``start`` waits for the first worker to be reading the sockets.
READY_WAIT = 30.0

ApplyEvents = Callable[[Sequence[AccountingEvent]], Sequence[EventOutcome]]


@dataclass(frozen=True, slots=True)
class Feed:
    """The store behind the server; the unit tier passes fakes."""

    apply: ApplyEvents
    open_sessions: Callable[[], Mapping[str, int]] | None = None


@dataclass(slots=True)
class Burst:
    """A batch the worker sent (the committer may commit several together)."""

    generation: int  # which worker sent it: a restarted one does not know it
    seq: int
    items: list[tuple[str, AccountingEvent | None, str | None]]  # kind, event, outcome


# tuple's own __new__ (C), where AccountingEvent's and Prefix's are Python
# functions: the reader thread builds one event per packet, and the interpreter
# lock it holds meanwhile is the committer's.
_new_tuple = tuple.__new__


def from_wire(wire: Wire) -> AccountingEvent:
    source, kind, at, session_id, account, ipv4, ipv6, session_time = wire
    return _new_tuple(
        AccountingEvent,
        (
            source,
            kind,
            at,
            session_id,
            account,
            None if ipv4 is None else _new_tuple(Prefix, ipv4),
            None if ipv6 is None else _new_tuple(Prefix, ipv6),
            session_time,
        ),
    )


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
        self, settings: RadiusSettings, feed: Feed, sockets: Sequence[socket.socket]
    ) -> None:
        self._settings = settings
        self._feed = feed
        self._sockets = list(sockets)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Batches the reader received for the committer.
        self._batches: queue.Queue[Burst] = queue.Queue()
        self._worker_queued = 0  # decoded packets the worker holds, as it last said
        # The running worker: its channel (the committer answers through it).
        self._channel_lock = threading.Lock()
        self._channel: Connection | None = None
        self._generation = 0
        self._busy = False  # the committer is storing a batch (it asks for none meanwhile)
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()  # the first worker is reading the sockets
        self.restarts = 0
        self.stats = Stats()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for sock in self._sockets]

    @property
    def worker_pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def view(self) -> StatsView:
        return self.stats.view(self._worker_queued, self.restarts)

    def open_sessions(self) -> Mapping[str, int]:
        return self._feed.open_sessions() if self._feed.open_sessions is not None else {}

    def start(self) -> None:
        for name, target in (("radius-worker", self._supervise), ("radius-commit", self._commit)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        shown = ", ".join(f"{host}:{port}" for host, port in self.addresses)
        # The controller reports healthy with its feed answering, not while the
        # worker still starts (datagrams would wait in the socket buffer meanwhile).
        if not self._ready.wait(READY_WAIT):
            log.warning("RADIUS worker not ready after %g s; its datagrams wait", READY_WAIT)
        log.info("RADIUS accounting on %s (%d clients)", shown, len(self._settings.clients.entries))

    def stop(self) -> None:
        """Stop the worker and both threads, close the sockets.  Packets still
        queued stay unanswered: their NAS retransmits to the next controller."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        for sock in self._sockets:
            sock.close()

    # -- the worker -----------------------------------------------------------------

    def _supervise(self) -> None:
        """Run the worker, restart it when it dies, stop it when we stop.

        The worker is started from this thread, which lives as long as the
        feed: the worker's PR_SET_PDEATHSIG fires when its starting thread ends.
        """
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                process, channel = self._spawn()
            except OSError as error:
                log.error("RADIUS worker not started: %s", error)
                self._stopping.wait(RESTART_PAUSE)
                continue
            try:
                self._read(channel)
            finally:
                with self._channel_lock:
                    self._channel = None
                channel.close()  # the worker's EOF: it exits
                code = _reap(process)
            self._worker_queued = 0
            if self._stopping.is_set():
                break
            self.restarts += 1
            log.error("RADIUS worker (pid %d) exited (%s); restarting it", process.pid, code)
            if time.monotonic() - started < RESTART_PAUSE:
                self._stopping.wait(RESTART_PAUSE)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Connection]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = tuple(sock.fileno() for sock in self._sockets)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "edgectl.controller.radius.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(), *fds),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        channel = Connection(ours.detach())
        setup = Setup(self._settings, fds, os.getpid(), logging.getLogger().getEffectiveLevel())
        with self._channel_lock:
            self._generation += 1
            self._channel = channel
            self._process = process
            with contextlib.suppress(OSError):  # it died already: _read sees the EOF
                channel.send_bytes(pickle.dumps(setup, protocol=5))
                if not self._busy:
                    # The committer is waiting: the new worker may send at once.
                    channel.send_bytes(self._answer_message([]))
        return process, channel

    def _read(self, channel: Connection) -> None:
        """The worker's messages until it exits (EOF) or we stop."""
        generation = self._generation
        while not self._stopping.is_set():
            try:
                if not channel.poll(0.2):
                    continue
                message = pickle.loads(channel.recv_bytes())
            except (EOFError, OSError):
                return
            if message[0] == "ready":
                self._ready.set()
            elif message[0] == "batch":
                _, seq, items = message
                events = [
                    (kind, from_wire(wire) if wire is not None else None, outcome)
                    for kind, wire, outcome in items
                ]
                self._batches.put(Burst(generation, seq, events))
            else:
                _, packets, dropped, queued = message
                self.stats.packets_counted(Counter(packets))
                for reason, count in dropped.items():
                    self.stats.drop(reason, count)
                self._worker_queued = queued

    def _answer_message(self, answers: list[tuple[int, bool]]) -> bytes:
        return pickle.dumps(("answer", answers, self._settings.max_batch), protocol=5)

    def _tell(self, batch: Sequence[Burst], *, committed: bool) -> None:
        """Tell the worker which batches are stored, and that we take the next."""
        with self._channel_lock:
            self._busy = False
            if self._channel is None:
                return  # between workers: _spawn asks the next one
            # A restarted worker never sent these: its NAS retransmit to it.
            answers = [(b.seq, committed) for b in batch if b.generation == self._generation]
            try:
                self._channel.send_bytes(self._answer_message(answers))
            except OSError as error:
                log.debug("RADIUS worker channel: %s", error)

    # -- committing -----------------------------------------------------------------

    def _take(self) -> list[Burst]:
        try:
            taken = [self._batches.get(timeout=0.2)]
        except queue.Empty:
            return []
        with self._channel_lock:
            self._busy = True
        with contextlib.suppress(queue.Empty):
            while True:  # from a restarted worker, or a second "want" crossing a batch
                taken.append(self._batches.get_nowait())
        return taken

    def _commit(self) -> None:
        while not self._stopping.is_set():
            batch = self._take()
            if batch:
                try:
                    self.commit(batch)
                except Exception:
                    count = sum(len(burst.items) for burst in batch)
                    log.exception("RADIUS batch of %d not answered", count)
                    self.stats.drop("commit_failed", count)
                    # Forgotten at once, so a retransmission is processed, not
                    # dropped as in flight; the next batch waits for the pause.
                    self._tell(batch, committed=False)
                    self._stopping.wait(FAILURE_PAUSE)
                else:
                    self._tell(batch, committed=True)

    def commit(self, batch: Sequence[Burst]) -> None:
        """Store ``batch`` in one call and count its packets (the caller answers them)."""
        events = [event for burst in batch for _, event, _ in burst.items if event is not None]
        outcomes: Sequence[EventOutcome] = []
        if events:
            started = time.monotonic()
            outcomes = self._feed.apply(events)
            self.stats.commit(time.monotonic() - started)
            if len(outcomes) != len(events):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(events)} events")
        counts: Counter[tuple[str, str]] = Counter()
        results = iter(outcomes)
        for burst in batch:
            for kind, event, outcome in burst.items:
                status = outcome if event is None else next(results).status
                counts[kind, status or "applied"] += 1
        # Counted before the answers leave: an answer ends a test's (or a
        # NAS's) wait, and the counters must already say why.
        self.stats.packets_counted(counts)


def _reap(process: subprocess.Popen[bytes]) -> int | str:
    """The worker's exit status, killing it if it does not exit in time."""
    try:
        return process.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(STOP_GRACE)
        return "not reaped"
