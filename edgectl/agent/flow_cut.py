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
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from edgectl.agent.conntrack import Cut, cut_flows
from edgectl.agent.keys import needs_full_sync
from edgectl.agent.netlink.nfsocket import NfNetlink
from edgectl.model.delta import StateDelta
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


class FlowCutter:
    def __init__(self, sock: NfNetlink) -> None:
        self.sock = sock

    @contextmanager
    def after_full(self, state: DesiredState, now: datetime | None) -> Iterator[None]:
        """Every block/smtp hold: flows may have started while the table was gone."""
        yield  # the commit; an exception skips the cut
        cut = holds(state.quarantines.values(), state.settings.mail_ports, now or _now())
        self.cut(cut)

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

    def cut(self, cut: Cut) -> None:
        """The hold is in force whatever happens here: a failure is logged, never raised."""
        if not cut:
            return
        start = time.monotonic()
        try:
            deleted = cut_flows(self.sock, cut)
        except (OSError, ValueError) as error:
            log.warning("open flows of held subscribers not cut: %s", error)
            return
        took = time.monotonic() - start
        # The cut runs under the kernel lock: a slow one (a huge conntrack
        # table, a loaded host) delays the next commit, so say so.
        if deleted or took > SLOW_CUT:
            log.info("cut %d open flows of held subscribers (%.0f ms)", deleted, took * 1000)


def _now() -> datetime:
    return datetime.now(UTC)
