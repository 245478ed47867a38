"""Writing last-known-good to disk off the apply path.

Most revisions are journalled as the delta that led to them (one short
line and an fsync), but a snapshot - after a full sync, or when the journal
has grown as large as the state - is seconds of JSON with a million keys.
So the sync loop hands each applied revision here and goes on; a writer
thread persists everything that arrived meanwhile in one go, in order.
Every revision written is one the kernel took whole, so a crash loses at
most the last moments of revisions (the controller resends them) and never
leaves a half state.  ``inline`` writes at once (tests, and the restore
path, which must save before the first request).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.persist import Record
from edgectl.model.delta import StateDelta
from edgectl.model.policy import DesiredState

log = logging.getLogger("edgectl.agent")


class StateWriter(Protocol):
    def record(self, records: Sequence[Record]) -> None: ...


class Persister:
    def __init__(self, store: StateWriter, metrics: Metrics, *, inline: bool = True) -> None:
        self._store = store
        self._metrics = metrics
        self.inline = inline
        self._lock = threading.Condition()
        self._pending: list[Record] = []
        self._writing = False

    def submit(
        self, state: DesiredState, generation: int | None, delta: StateDelta | None = None
    ) -> None:
        """Persist ``state``; ``delta`` is what led to it from the previous submission."""
        record = Record(state, generation, delta)
        if self.inline:
            self._write([record])
            return
        with self._lock:
            self._pending.append(record)
            self._lock.notify_all()

    def _write(self, records: list[Record]) -> None:
        try:
            self._store.record(records)
        except OSError as error:
            # The kernel holds the state either way; only a reboot would fall
            # back to the older file, and the controller corrects that.  The
            # store's next write is a snapshot, so the chain on disk stays whole.
            self._metrics.add("persist_failures")
            revision = records[-1].state.revision
            log.error("revision %d in force but not persisted: %s", revision, error)

    def write_pending(self) -> bool:
        """Write everything submitted so far, in order; True if anything was written."""
        with self._lock:
            pending, self._pending = self._pending, []
            if not pending:
                return False
            self._writing = True
        try:
            self._write(pending)
        finally:
            with self._lock:
                self._writing = False
                self._lock.notify_all()
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted is on disk (shutdown)."""
        self.write_pending()
        with self._lock:
            self._lock.wait_for(lambda: not self._writing and not self._pending, timeout)

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._lock:
                self._lock.wait_for(lambda: bool(self._pending) or stop.is_set(), 1.0)
            self.write_pending()
