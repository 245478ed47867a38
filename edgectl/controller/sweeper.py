"""The background task that enforces expiry when nobody calls the API."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from starlette.concurrency import run_in_threadpool

from edgectl.controller.settings import Settings
from edgectl.controller.store import Store, console_sessions, episodes, feed, sweep

log = logging.getLogger(__name__)


async def run(store: Store, settings: Settings) -> None:
    """Expire holds, purge old tombstones, revision times and session intervals, unbind
    stale sessions, end timed-out console sign-ins, and checkpoint SQLite's WAL every
    ``sweep_interval``, until cancelled.

    Agents also get each entry's expiry and let the kernel time it out, so
    a sweep that runs late costs only a late audit record, not a late lift.
    """
    while True:
        try:
            expired = await run_in_threadpool(sweep.expire, store)
            if expired:
                log.info("expired %d holds", expired)
            await run_in_threadpool(sweep.purge_tombstones, store, settings.tombstone_retention)
            await run_in_threadpool(sweep.forget_revisions, store, settings.tombstone_retention)
            await run_in_threadpool(sweep.purge_history, store, settings.session_retention_days)
            await run_in_threadpool(episodes.purge, store, settings.session_retention_days)
            if settings.stale_session_after > 0:
                silent = timedelta(seconds=settings.stale_session_after)
                stale = await run_in_threadpool(feed.unbind_stale, store, silent)
                if stale:
                    log.info("unbound %d stale sessions", stale)
            await run_in_threadpool(
                console_sessions.purge,
                store,
                settings.console_idle_timeout,
                settings.console_absolute_timeout,
            )
            await run_in_threadpool(store.database.checkpoint)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep sweeping: one bad pass must not stop expiry for good
            log.exception("sweep failed")
        await asyncio.sleep(settings.sweep_interval)
