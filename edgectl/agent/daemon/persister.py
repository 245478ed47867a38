"""Writing last-known-good to disk off the apply path.

The state file holds the whole state: with a million keys one write is
seconds of JSON and an fsync, while the delta it records took a
millisecond.  So the sync loop hands each applied state here and goes on;
a writer thread writes the newest one, coalescing whatever arrived
meanwhile.  Every file written is a state the kernel took whole, so a
crash loses at most the last moments of revisions (the controller resends
them) and never leaves a half state.  ``inline`` writes at once (tests, and
the restore path, which must save before the first request).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from edgectl.agent.daemon.metrics import Metrics
from edgectl.model.policy import DesiredState

log = logging.getLogger("edgectl.agent")


class StateWriter(Protocol):
    def save(self, state: DesiredState, generation: int | None) -> None: ...


class Persister:
    def __init__(self, store: StateWriter, metrics: Metrics, *, inline: bool = True) -> None:
        self._store = store
        self._metrics = metrics
        self.inline = inline
        self._lock = threading.Condition()
        self._pending: tuple[DesiredState, int | None] | None = None
        self._writing = False

    def submit(self, state: DesiredState, generation: int | None) -> None:
        if self.inline:
            self._write(state, generation)
            return
        with self._lock:
            self._pending = (state, generation)
            self._lock.notify_all()

    def _write(self, state: DesiredState, generation: int | None) -> None:
        try:
            self._store.save(state, generation)
        except OSError as error:
            # The kernel holds the state either way; only a reboot would fall
            # back to the older file, and the controller corrects that.
            self._metrics.add("persist_failures")
            log.error("revision %d in force but not persisted: %s", state.revision, error)

    def write_pending(self) -> bool:
        """Write the newest submitted state, if any; True if one was written."""
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is None:
                return False
            self._writing = True
        try:
            self._write(*pending)
        finally:
            with self._lock:
                self._writing = False
                self._lock.notify_all()
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted is on disk (shutdown)."""
        self.write_pending()
        with self._lock:
            self._lock.wait_for(lambda: not self._writing and self._pending is None, timeout)

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._lock:
                self._lock.wait_for(lambda: self._pending is not None or stop.is_set(), 1.0)
            self.write_pending()
