"""Holds that stop open flows: after the commit, the held keys' conntrack entries go.

The table accepts packets of established flows at its first rule (one
conntrack check, the cheapest packet path there is), so a hold put in force
would only stop *new* connections.  For ``block`` (and, for mail flows,
``smtp``) that is not enough: an infected host's UDP flood or open SMTP
session must stop now.  Rather than checking every established packet
against the hold sets (a cost on every subscriber's every packet), the
agent deletes the held keys' conntrack entries right after the commit that
put the hold in force.  The next packet of such a flow finds no entry: it
is new again (TCP mid-stream too: conntrack picks it up as new), so it
meets the hold rules and is dropped there.

Both commit paths, the agent's and ``edgectl apply``, go through
``Dataplane``, which wraps its commits in ``after_full``/``after_delta``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial

from edgectl.agent.conntrack import Cut, CutSource, Matcher, cut_flows
from edgectl.agent.keys import needs_full_sync
from edgectl.agent.netlink.nfsocket import NfNetlink
from edgectl.agent.netns import inside
from edgectl.model.delta import StateDelta
from edgectl.model.keymap import KeyMap
from edgectl.model.policy import DesiredState, Quarantine, QuarantineMode
from edgectl.model.prefix import Prefix

log = logging.getLogger("edgectl.agent")
SLOW_CUT = 0.5  # seconds


def holds(quarantines: Iterable[Quarantine], mail_ports: Iterable[int], now: datetime) -> Cut:
    """What to cut for these holds: ``block`` everything, ``smtp`` mail; expired ones nothing."""
    everything: set[Prefix] = set()
    mail: set[Prefix] = set()
    for hold in quarantines:
        if hold.expires is not None and hold.expires <= now:
            continue
        if hold.mode is QuarantineMode.BLOCK:
            everything.add(hold.key)
        elif hold.mode is QuarantineMode.SMTP:
            mail.add(hold.key)
    return Cut(frozenset(everything), frozenset(mail), frozenset(mail_ports))


class HeldKeys:
    """Every ``block`` and ``smtp`` hold of a state, matched where the holds already are.

    After a full sync every hold is a cut target.  Copying a million keys
    into sets (and holding the copy) would cost more than the dump; instead
    an address is masked to each key shape the holds have (IPv4 /32, the
    IPv6 delegated lengths, any range lengths: a handful) and looked up in
    the state's own map.
    """

    def __init__(
        self, quarantines: Mapping[Prefix, Quarantine], now: datetime, mail_ports: Iterable[int]
    ) -> None:
        self.quarantines = quarantines
        self.now = now
        self.mail_ports = frozenset(mail_ports)

    def matchers(self) -> tuple[Matcher, Matcher]:
        quarantines = self.quarantines
        if isinstance(quarantines, KeyMap):
            shapes = list(quarantines.shapes())
        else:  # a plain mapping (edgectl apply): one pass over its keys
            shapes = list({(key.version, key.length) for key in quarantines})
        return (
            _HeldMatcher(quarantines, shapes, QuarantineMode.BLOCK, self.now),
            _HeldMatcher(quarantines, shapes, QuarantineMode.SMTP, self.now),
        )


def held_keys(state: DesiredState, now: datetime) -> HeldKeys:
    """What a full sync of ``state`` cuts: every block/smtp hold in force."""
    return HeldKeys(state.quarantines, now, state.settings.mail_ports)


class _HeldMatcher:
    def __init__(
        self,
        quarantines: Mapping[Prefix, Quarantine],
        shapes: list[tuple[int, int]],
        mode: QuarantineMode,
        now: datetime,
    ) -> None:
        self.quarantines = quarantines
        self.mode = mode
        self.now = now
        bits = {4: 32, 6: 128}
        self.masks: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for version, length in sorted(shapes, key=lambda shape: -shape[1]):
            mask = ((1 << length) - 1) << (bits[version] - length)
            self.masks[version].append((mask, length))

    def __contains__(self, item: tuple[int, int]) -> bool:
        version, address = item
        for mask, length in self.masks[version]:
            hold = self.quarantines.get(Prefix(version, address & mask, length))
            if (
                hold is not None
                and hold.mode is self.mode
                and (hold.expires is None or hold.expires > self.now)
            ):
                return True
        return False


class FlowCutter:
    """Where a commit's cuts go: done at once (``sink`` None) or handed to a ``BackgroundCuts``."""

    def __init__(self, sock: NfNetlink, sink: Callable[[CutSource], None] | None = None) -> None:
        self.sock = sock
        self.sink = sink

    @contextmanager
    def after_full(self, state: DesiredState, now: datetime | None) -> Iterator[None]:
        """Every block/smtp hold: flows may have started while the table was gone."""
        yield  # the commit; an exception skips the cut
        # Lazy: looked up only if the dump shows flows to match.
        self.cut(partial(held_keys, state, now or _now()))

    @contextmanager
    def after_delta(
        self, old: DesiredState, delta: StateDelta, now: datetime | None
    ) -> Iterator[None]:
        """Holds that are new or changed mode; a structural delta is a full sync (cut there)."""
        full = needs_full_sync(old, delta)
        yield
        if full:
            return
        fresh = (
            q
            for q in delta.quarantines.upserts
            if (before := old.quarantines.get(q.key)) is None or before.mode is not q.mode
        )
        self.cut(holds(fresh, old.settings.mail_ports, now or _now()))

    def cut(self, source: CutSource) -> None:
        if isinstance(source, Cut) and not source:
            return
        if self.sink is not None:
            self.sink(source)
        else:
            cut_now(self.sock, [source])


def cut_now(sock: NfNetlink, sources: Sequence[CutSource]) -> None:
    """The hold is in force whatever happens here: a failure is logged, never raised."""
    start = time.monotonic()
    try:
        deleted = cut_flows(sock, sources)
    except (OSError, ValueError) as error:
        log.warning("open flows of held subscribers not cut: %s", error)
        return
    took = time.monotonic() - start
    if deleted or took > SLOW_CUT:
        log.info("cut %d open flows of held subscribers (%.0f ms)", deleted, took * 1000)


class BackgroundCuts:
    """The agent's cuts, off its commit path, merged while one runs.

    A cut is a ctnetlink dump, and the kernel walks its whole conntrack
    hash table for it (the table is shared by every namespace): 10-25 ms
    on a 24 GiB host even with no entries in ours.  Done inline, that would
    be most of a one-key delta's cost (the delta itself is ~0.2 ms), and a
    burst of quarantines would pay it once each.  Here the commit returns
    as soon as the hold is in force (new connections meet it at once); a
    thread with its own socket cuts the open flows right after, and the
    cuts that arrive while one runs go together in the next dump, so a
    burst costs a few dumps, not one per hold.
    """

    def __init__(self, netns: str | None) -> None:
        with inside(netns):
            self._sock = NfNetlink()
        self._lock = threading.Condition()
        self._pending: list[CutSource] = []
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="flow-cut", daemon=True)
        self._thread.start()

    def submit(self, source: CutSource) -> None:
        with self._lock:
            self._pending.append(source)
            self._lock.notify()

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is pending or running; False if ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self) -> None:
        """Finish what is pending, then stop (a hold's flows are cut before the agent exits)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join()
        self._sock.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._pending) or self._closed)
                sources, self._pending = self._pending, []
                if not sources:
                    return  # closed with nothing left to cut
                self._busy = True
            try:
                cut_now(self._sock, sources)
            except Exception:
                # cut_now logs the failures it expects; anything else must
                # not end the thread, or no later hold would cut its flows.
                log.exception("open flows of held subscribers not cut")
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()


def _now() -> datetime:
    return datetime.now(UTC)
