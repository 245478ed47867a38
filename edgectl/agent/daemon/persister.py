"""Writing last-known-good to disk off the apply path.

Most revisions are journalled as the delta that led to them (one short
line and an fsync), but a snapshot - after a full sync, or when the journal
has grown larger than the state - is seconds of JSON with a million keys.
So the sync loop hands each applied revision here and goes on; a writer
thread persists everything that arrived meanwhile in one go, in order
(only the deltas and the newest state are kept meanwhile).  Every revision
written is one the kernel took whole, so a crash loses at most the last
moments of revisions (the controller resends them) and never leaves a half
state.  ``inline`` writes at once (tests, and ``edgectl agent restore``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.nft import release_heap
from edgectl.agent.persist import Step
from edgectl.model.delta import StateDelta
from edgectl.model.policy import DesiredState

log = logging.getLogger("edgectl.agent")


class StateWriter(Protocol):
    def record(self, steps: Sequence[Step], newest: DesiredState) -> None: ...
    def checkpoint(
        self, state: DesiredState, generation: int | None, epoch: str | None
    ) -> bool: ...


class Persister:
    def __init__(self, store: StateWriter, metrics: Metrics, *, inline: bool = True) -> None:
        self._store = store
        self._metrics = metrics
        self.inline = inline
        self._lock = threading.Condition()
        # What arrived since the last write: the steps (small: deltas) and
        # the newest state only - a snapshot needs nothing older.
        self._steps: list[Step] = []
        self._newest: DesiredState | None = None
        # One write at a time, in submission order: the background thread
        # and a shutdown flush() may both try.  Holding it also means no
        # write is in progress, which is all flush() needs to know.
        self._write_lock = threading.Lock()

    def submit(
        self,
        state: DesiredState,
        generation: int | None,
        delta: StateDelta | None = None,
        epoch: str | None = None,
    ) -> None:
        """Persist ``state`` (of store ``epoch``); ``delta`` is what led to it from
        the previous submission."""
        step = Step(delta, generation, epoch)
        if self.inline:
            with self._write_lock:
                self._write([step], state)
            return
        with self._lock:
            if delta is None:
                self._steps = [step]  # a snapshot of ``state`` holds everything before it
            else:
                self._steps.append(step)
            self._newest = state
            self._lock.notify_all()

    def _write(self, steps: list[Step], newest: DesiredState) -> None:
        try:
            self._store.record(steps, newest)
            if steps[0].delta is None:
                # A snapshot of a million keys leaves ~100 MiB of freed JSON
                # that glibc keeps mapped unless asked (agent RSS at 1M keys,
                # bench/agent_steady.py: 401-426 MiB without this, 372 with).
                release_heap()
        except Exception as error:
            # The kernel holds the state either way; only a reboot would fall
            # back to the older files, and the controller corrects that.  The
            # store's next write is a snapshot, so the chain on disk stays whole.
            self._metrics.add("persist_failures")
            if isinstance(error, OSError):
                log.error("revision %d in force but not persisted: %s", newest.revision, error)
            else:
                log.exception("revision %d in force but not persisted (a bug)", newest.revision)

    def write_pending(self, timeout: float = -1) -> bool:
        """Write everything submitted so far, in order; True if anything was written.

        Returns only when no write is in progress (or after ``timeout`` s).
        """
        if not self._write_lock.acquire(timeout=timeout):
            return False
        try:
            with self._lock:
                steps, newest = self._steps, self._newest
                self._steps, self._newest = [], None
            if newest is None:
                return False
            self._write(steps, newest)
            return True
        finally:
            self._write_lock.release()

    def checkpoint(self, state: DesiredState, generation: int | None, epoch: str | None) -> None:
        """After ``flush``, at a clean stop: fold the journal into a snapshot if it changed
        anything (the next start restores from the snapshot's payload)."""
        with self._write_lock:
            try:
                if self._store.checkpoint(state, generation, epoch):
                    log.info("revision %d written as a snapshot for the next start", state.revision)
                    release_heap()
            except Exception as error:
                # The journal on disk is whole: the next start replays it.
                self._metrics.add("persist_failures")
                log.error("no snapshot at stop (the journal stays): %s", error)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted is on disk (shutdown)."""
        self.write_pending(timeout)

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._lock:
                self._lock.wait_for(lambda: self._newest is not None or stop.is_set(), 1.0)
            self.write_pending()
