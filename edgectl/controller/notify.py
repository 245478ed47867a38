"""Wake long-polls when a gateway changes, and know its revision without asking.

Two sources of change:

* A commit in this process: the store calls ``publish`` from the worker
  thread that committed, which hands the gateway ids to the event loop with
  ``call_soon_threadsafe``; ``_wake`` sets each gateway's event at once.
* A commit in another controller process: on PostgreSQL its NOTIFY arrives
  on this process's LISTEN connection (``Store.follow``, a thread) and
  ``publish_remote`` wakes those gateways within milliseconds.  As a safety
  net for a lost notification (the LISTEN connection broke) and on its own
  where there is none, one shared task (``run``) reads every gateway's
  revision every ``poll_interval`` (one query, however many agents wait)
  and wakes each gateway with a parked waiter whose cursor is no longer
  the revision.

It also remembers the newest revision read for each gateway (``saw``), so
an agent asking again with the revision it was just served can park
without a database read.  That memory is trusted only while it is younger
than a few ``poll_interval`` (the caller's ``max_age``) and no commit here
or notification from elsewhere has touched the gateway since the read
began; a change from elsewhere after the read is caught by the
next shared re-check, which either wakes the waiter or (if the request has
not parked yet) replaces the memory first.  Everything except ``publish``
runs on the event loop, so "check the memory, then park" cannot interleave
with a wake-up or a re-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# Every gateway's revision, and the store's epoch.
RevisionReader = Callable[[], Awaitable[tuple[Mapping[int, int], str | None]]]


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[int, asyncio.Event] = {}
        # gateway -> (revision, loop time the read began): the newest read.
        self._seen: dict[int, tuple[int, float]] = {}
        # gateway -> loop time of the last local wake-up: reads begun before it are stale.
        self._woken: dict[int, float] = {}
        # gateway -> cursors of the requests parked on it.
        self._parked: dict[int, Counter[int]] = {}
        self._poller: asyncio.Task[None] | None = None
        # The store's epoch as last read (see store.epoch); None: not read yet.
        self.epoch: str | None = None
        # True while another process's changes arrive by notification (PostgreSQL LISTEN).
        self.listening = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def unbind(self) -> None:
        self._loop = None
        self._events.clear()
        self._seen.clear()

    def publish(self, gateways: Iterable[int]) -> None:
        """Thread-safe: called by the store after a commit."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between check and call
            loop.call_soon_threadsafe(self._wake, tuple(gateways))

    def publish_remote(self, gateways: frozenset[int] | None) -> None:
        """Thread-safe: another process committed changes to ``gateways`` (None: to
        any, or the listener just (re)connected; wake every waiter)."""
        if gateways is None:
            self.listening = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            if gateways is None:
                loop.call_soon_threadsafe(self.wake_all)
            else:
                loop.call_soon_threadsafe(self._wake, tuple(gateways))

    def listener_lost(self) -> None:
        """Thread-safe: notifications stopped; the periodic re-check alone finds changes."""
        self.listening = False

    def _wake(self, gateways: Iterable[int]) -> None:
        now = self._now()
        for gateway in gateways:
            self._woken[gateway] = now
            self._seen.pop(gateway, None)
            event = self._events.pop(gateway, None)
            if event is not None:
                event.set()

    def wake_all(self) -> None:
        """Every parked request reads again (the store's epoch changed)."""
        self._wake(list(self._parked))
        self._seen.clear()

    def saw_epoch(self, epoch: str | None) -> None:
        """A read found the store at ``epoch``; a change wakes everyone parked."""
        if epoch is None:
            return
        changed = self.epoch is not None and epoch != self.epoch
        self.epoch = epoch
        if changed:
            self.wake_all()

    def _now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else asyncio.get_running_loop().time()

    def event(self, gateway: int) -> asyncio.Event:
        """The event the next change of ``gateway`` sets (take it before reading)."""
        return self._events.setdefault(gateway, asyncio.Event())

    # -- what the last reads said ---------------------------------------------------

    def began(self) -> float:
        """A read's start, to hand to ``saw`` with what it read."""
        return self._now()

    def saw(self, gateway: int, revision: int, began: float) -> None:
        """A read that began at ``began`` found ``gateway`` at ``revision``."""
        if began <= self._woken.get(gateway, float("-inf")):
            return  # a local commit may have landed after it read
        known = self._seen.get(gateway)
        if known is None or known[1] < began:
            self._seen[gateway] = (revision, began)

    def known(self, gateway: int, max_age: float) -> int | None:
        """The revision of ``gateway`` if a read less than ``max_age`` old says so
        and no local commit touched it since; else None (read it)."""
        known = self._seen.get(gateway)
        if known is None or self._now() - known[1] >= max_age:
            return None
        return known[0]

    # -- parking ------------------------------------------------------------------

    async def wait(
        self,
        gateway: int,
        since: int,
        event: asyncio.Event,
        timeout: float,
        gone: asyncio.Future[None] | None = None,
    ) -> None:
        """Until ``event`` is set, ``timeout`` passes or ``gone`` (the client
        hung up) is done; counted as parked on ``since`` meanwhile."""
        cursors = self._parked.setdefault(gateway, Counter())
        cursors[since] += 1
        woken: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        waiting: list[asyncio.Future[Any]] = [woken] if gone is None else [woken, gone]
        try:
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            cursors[since] -= 1
            if cursors[since] <= 0:
                del cursors[since]
            if not cursors:
                self._parked.pop(gateway, None)

    def parked(self) -> int:
        """How many requests are parked (tests wait for this)."""
        return sum(sum(cursors.values()) for cursors in self._parked.values())

    # -- the shared re-check for changes made by other processes ------------------

    @property
    def polling(self) -> bool:
        """True while ``run`` re-checks revisions for every waiter."""
        return self._poller is not None and not self._poller.done()

    async def run(self, read: RevisionReader, interval: float) -> None:
        """Every ``interval``: read all revisions, wake gateways whose waiters are behind."""
        self._poller = asyncio.current_task()
        try:
            while True:
                await asyncio.sleep(interval)
                began = self._now()
                try:
                    revisions, epoch = await read()
                except Exception:
                    # Waiters must not sleep through an outage unseen: wake
                    # them all, each then reads (and reports) for itself.
                    log.exception("revision re-check failed")
                    self._poll_wake(list(self._parked))
                    continue
                self.saw_epoch(epoch)
                self._apply(revisions, began)
        finally:
            self._poller = None

    def _apply(self, revisions: Mapping[int, int], began: float) -> None:
        behind = []
        for gateway, cursors in self._parked.items():
            revision = revisions.get(gateway)
            # A deleted gateway (no revision) wakes its waiters too: they get 404.
            if revision is None or any(since != revision for since in cursors):
                behind.append(gateway)
        for gateway, revision in revisions.items():
            self.saw(gateway, revision, began)
        gone = [g for g, (_, at) in self._seen.items() if g not in revisions and at < began]
        for gateway in gone:
            del self._seen[gateway]  # deleted since
        self._poll_wake(behind)

    def _poll_wake(self, gateways: Iterable[int]) -> None:
        for gateway in gateways:
            event = self._events.pop(gateway, None)
            if event is not None:
                event.set()
