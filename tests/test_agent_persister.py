"""The agent's persister: applied revisions reach the disk in order, off the apply path."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.daemon.persister import Persister
from edgectl.agent.persist import StateStore, Step
from edgectl.model import DesiredState, Prefix, Quarantine, QuarantineMode
from edgectl.model.delta import diff

DEADLINE = 10.0


def _next(state: DesiredState, address: str) -> DesiredState:
    key = Prefix.parse(address)
    quarantines = {**state.quarantines, key: Quarantine(key, QuarantineMode.BLOCK, None)}
    return replace(state, revision=state.revision + 1, quarantines=quarantines)


class Gate:
    """A store wrapper whose first write waits until the test opens the gate."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.entered = threading.Event()
        self.open = threading.Event()
        self.active = 0
        self.overlaps = 0
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def record(self, steps: Sequence[Step], newest: DesiredState) -> None:
        with self._lock:
            self.active += 1
            self.overlaps += self.active > 1
        try:
            self.calls.append(newest.revision)
            if len(self.calls) == 1:
                self.entered.set()
                assert self.open.wait(DEADLINE)
            self.store.record(steps, newest)
        finally:
            with self._lock:
                self.active -= 1


def test_a_flush_during_a_background_write_waits_and_keeps_the_order(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    gate = Gate(StateStore(tmp_path))
    persister = Persister(gate, Metrics("gw"), inline=False)
    stop = threading.Event()
    writer = threading.Thread(target=persister.run_forever, args=(stop,), daemon=True)
    writer.start()
    try:
        r8 = _next(policy_state, "100.64.7.1")
        r9 = _next(r8, "100.64.7.2")
        persister.submit(policy_state, 1)
        assert gate.entered.wait(DEADLINE)  # the thread is inside its first write
        persister.submit(r8, 2, diff(policy_state, r8))
        persister.submit(r9, 3, diff(r8, r9))
        flusher = threading.Thread(target=persister.flush)
        flusher.start()
        gate.open.set()
        flusher.join(DEADLINE)
        assert not flusher.is_alive()
    finally:
        stop.set()
        writer.join(DEADLINE)
    assert gate.overlaps == 0
    assert gate.calls == [policy_state.revision, r9.revision]
    applied = StateStore(tmp_path).load()
    assert applied is not None and applied.state == r9 and applied.generation == 3
    # r8 and r9 went to the journal as deltas after the snapshot of r7.
    assert len(StateStore(tmp_path).journal_path.read_text().splitlines()) == 3


class Buggy:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.fail = True

    def record(self, steps: Sequence[Step], newest: DesiredState) -> None:
        if self.fail:
            self.fail = False
            raise RuntimeError("a bug in the store")
        self.store.record(steps, newest)


def test_a_bug_in_a_write_is_counted_and_the_writer_goes_on(
    tmp_path: Path, policy_state: DesiredState, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics("gw")
    persister = Persister(Buggy(StateStore(tmp_path)), metrics, inline=False)
    stop = threading.Event()
    writer = threading.Thread(target=persister.run_forever, args=(stop,), daemon=True)
    writer.start()
    try:
        persister.submit(policy_state, 1)
        persister.flush()
        assert metrics.persist_failures == 1
        assert "a bug in the store" in caplog.text
        r8 = _next(policy_state, "100.64.7.1")
        persister.submit(r8, 2, diff(policy_state, r8))
        persister.flush()
    finally:
        stop.set()
        writer.join(DEADLINE)
    assert writer.is_alive() is False
    applied = StateStore(tmp_path).load()
    assert applied is not None and applied.state == r8


def test_only_the_newest_state_is_held_while_deltas_wait(policy_state: DesiredState) -> None:
    persister = Persister(StateStore(Path("/nonexistent")), Metrics("gw"), inline=False)
    r8 = _next(policy_state, "100.64.7.1")
    r9 = _next(r8, "100.64.7.2")
    persister.submit(policy_state, 1)
    persister.submit(r8, 2, diff(policy_state, r8))
    persister.submit(r9, 3, diff(r8, r9))
    assert [step.delta is None for step in persister._steps] == [True, False, False]
    assert persister._newest is r9
    # A later snapshot makes everything before it moot.
    persister.submit(policy_state, 4)
    assert persister._steps == [Step(None, 4)]
