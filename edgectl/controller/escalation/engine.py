"""The escalation engine: a background task of the controller.

Each pass copies the gateways' offender entries into episodes, then runs
every policy once (``store/strikes.py``).  Several controller processes
may share one PostgreSQL database; only the one holding a session-level
advisory lock acts, so no action is taken twice.  The lock lives as long
as its connection: a leader that dies or loses the database frees it, and
another process takes over at its next pass.  SQLite allows one
controller process per file, so there it just runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from edgectl.controller.escalation import ladder
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store, episodes, policies, strikes

log = logging.getLogger(__name__)

# pg_advisory_lock takes a bigint; this one is "edgectl\x01" read as an integer.
LOCK_KEY = int.from_bytes(b"edgectl\x01", "big")


class Leader:
    """Whether this process may act: always on SQLite, the advisory lock's holder on PostgreSQL."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._connection: Connection | None = None

    def acquire(self) -> bool:
        """True while this process leads; tries to become leader when it does not."""
        if self._store.database.dialect != "postgresql":
            return True
        try:
            if self._connection is not None:
                # Still ours only if the session that holds it is alive.
                self._connection.exec_driver_sql("SELECT 1")
                return True
            connection = self._store.database.engine.connect()
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            got = connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}
            ).scalar()
            if got:
                self._connection = connection
                log.info("escalation: this controller leads")
                return True
            connection.invalidate()  # not back to the pool: nothing of ours may linger
            connection.close()
            return False
        except sa.exc.DBAPIError:
            log.warning("escalation: lost the database; leading no more", exc_info=True)
            self.release()
            return False

    def release(self) -> None:
        if self._connection is None:
            return
        # The pool would keep the session, and the lock with it, for the next
        # borrower: invalidate closes the database session itself.
        with contextlib.suppress(sa.exc.DBAPIError):
            self._connection.invalidate()
        with contextlib.suppress(sa.exc.DBAPIError):
            self._connection.close()
        self._connection = None


@dataclass
class PassResult:
    episodes: int = 0
    strikes: dict[str, int] = field(default_factory=dict)
    absorbed: int = 0
    brake_alerts: int = 0


def run_once(store: Store, settings: Settings) -> PassResult:
    """One pass over every policy; the caller makes sure this process leads."""
    result = PassResult(episodes=episodes.record(store))
    caps = ladder.Caps(settings.escalation_fleet_per_hour, settings.escalation_pool_per_hour)
    with store.read() as connection:
        wanted = policies.active(connection)
    for policy in wanted:
        outcome = strikes.run(store, policy, caps)
        for name, count in outcome.strikes.items():
            result.strikes[name] = result.strikes.get(name, 0) + count
        result.absorbed += outcome.absorbed
        result.brake_alerts += outcome.brake_alerts
    return result


class Stats:
    """What /metrics shows of this process's engine: whether it leads, passes made."""

    def __init__(self) -> None:
        self.leader = False
        self.passes = 0


async def run(store: Store, settings: Settings, stats: Stats | None = None) -> None:
    """Passes every ``escalation_interval`` while this process leads, until cancelled."""
    leader = Leader(store)
    stats = stats or Stats()
    try:
        while True:
            try:
                stats.leader = await run_in_threadpool(leader.acquire)
                if stats.leader:
                    result = await run_in_threadpool(run_once, store, settings)
                    stats.passes += 1
                    if result.strikes:
                        log.info("escalation: %s", _summary(result))
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not stop escalation for good
                log.exception("escalation pass failed")
            await asyncio.sleep(settings.escalation_interval)
    finally:
        await run_in_threadpool(leader.release)


def _summary(result: PassResult) -> dict[str, Any]:
    return {"strikes": result.strikes, "absorbed": result.absorbed}
