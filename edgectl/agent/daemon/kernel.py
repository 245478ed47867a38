"""The gateway's kernel as the agent uses it: one ``Dataplane``, one lock.

The Dataplane is opened once inside the gateway's namespace and kept for the
agent's life (an element add through a kept handle costs ~0.16 ms, a new
``nft`` ~5 ms).  Its handles are not thread-safe, and the sync loop and the
drift monitor share them, so every kernel operation holds ``lock``.

Own commits versus foreign ones: every committed nf_tables transaction bumps
the ruleset generation by exactly one (checked on 6.x with nftables 1.0.6),
so reading the generation just before our commit tells which generation is
ours (before + 1, or + 2 for a table restored structure first, then keys).
``expected`` is that number; a generation that differs from it means
someone else committed since, and the drift monitor looks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from edgectl.agent.apply import ApplyResult, Dataplane
from edgectl.agent.flow_cut import BackgroundCuts, FlowCutter
from edgectl.agent.nft import NftError, release_heap
from edgectl.agent.persist import Applied
from edgectl.agent.plan import make_plan
from edgectl.agent.render import render_full
from edgectl.agent.restore_payload import Payload
from edgectl.model.delta import StateDelta
from edgectl.model.policy import DesiredState
from edgectl.model.serial import StateColumns


@dataclass(frozen=True, slots=True)
class Commit:
    result: ApplyResult
    generation: int  # the generation our transaction created


class Kernel:
    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self.lock = threading.RLock()
        # Cutting held keys' open flows is a walk of the host's conntrack
        # table (10-25 ms): off the commit path, so a delta costs what it
        # touches (edgectl.agent.flow_cut.BackgroundCuts).
        self.cuts = BackgroundCuts(netns)
        try:
            self._dataplane = Dataplane(netns, self.cuts)
        except BaseException:
            self.cuts.close()
            raise
        # The generation our last commit produced (None: no commit yet).
        self.expected: int | None = None
        # Set when a foreign commit slipped in before one of ours: our commit
        # moved the generation to ``expected`` and would hide it otherwise.
        self.suspect = False
        # The last named-counter reading (reports, scrapes): a full sync after
        # the table was flushed starts the counters from it, not from zero.
        self._last_counters: dict[str, tuple[int, int]] = {}

    def close(self) -> None:
        self.cuts.close()  # outside the lock: it finishes the pending cut first
        with self.lock:
            self._dataplane.close()

    def generation(self) -> int:
        with self.lock:
            return self._dataplane.generation()

    def _commit(self, run: Callable[[], ApplyResult]) -> Commit:
        with self.lock:
            before = self._dataplane.generation()
            result = run()
            if result.kind == "full":
                # A full sync replaces the whole table in one transaction:
                # whatever anyone did to it before is gone.
                self.suspect = False
            elif self.expected is not None and before != self.expected:
                self.suspect = True
            if result.kind == "none":
                return Commit(result, self.expected if self.expected is not None else before)
            self.expected = before + result.commits
            return Commit(result, self.expected)

    def full_sync(self, state: DesiredState, now: datetime | None = None) -> Commit:
        return self._commit(lambda: self._dataplane.full_sync(state, now, self._last_counters))

    def sync_columns(self, columns: StateColumns, now: datetime | None = None) -> Commit | None:
        """A first snapshot onto no table, written from its key columns
        (``Dataplane.sync_columns``); None if our table is there: the caller
        full-syncs the model instead (one transaction over a live table)."""
        with self.lock:
            if self._dataplane.table_exists():
                return None
            return self._commit(lambda: self._onto_no_table(columns, now))

    def _onto_no_table(self, columns: StateColumns, now: datetime | None) -> ApplyResult:
        result = self._dataplane.sync_columns(columns, now, self._last_counters)
        if result is None:  # another process made our table since the check above
            raise ValueError("sync_columns writes onto no table; this one has ours")
        return result

    def restore_payload(self, payload: Payload, now: datetime | None = None) -> Commit:
        """The table of a persisted snapshot from its payload (edgectl.agent.restore_payload).

        What a full sync of that state commits, but only the structure is
        rendered here; the keys are the stored text.  As a full sync does:
        with no table, the structure first, then the keys; over an existing
        table, one transaction.
        """
        return self._commit(lambda: self._payload_sync(payload, now or datetime.now(UTC)))

    def _payload_sync(self, payload: Payload, now: datetime) -> ApplyResult:
        start = time.perf_counter()
        dataplane = self._dataplane
        try:
            counters = {**self._last_counters, **dataplane.counters()}
            rendered = render_full(payload.structure, now, counters, keys=False)
            structure, keys = str(rendered.transaction), payload.keys_script(now)
            # An existing table is replaced in one transaction: it never shows
            # its structure without its keys.
            scripts = [structure, keys] if not dataplane.table_exists() else [structure + keys]
            for index, script in enumerate(scripts):
                try:
                    dataplane.nft.run(script)
                except NftError as error:
                    done = "kernel unchanged" if index == 0 else "structure in force"
                    raise NftError(
                        f"restore of revision {payload.revision} refused, {done}: {error.message}",
                        error.kind,
                    ) from error
        finally:
            release_heap()  # as a full sync: libnftables' parse of the keys is freed
        size = sum(map(len, scripts))
        seconds = time.perf_counter() - start
        return ApplyResult("full", payload.revision, seconds, size, commits=len(scripts))

    def cut_held(self, state: DesiredState) -> None:
        """Cut the open flows of ``state``'s holds, as a full sync does after its commit
        (``restore_payload`` commits before the held keys are known as a model)."""
        with self.lock, FlowCutter(self._dataplane.sock, self.cuts.submit).after_full(state, None):
            pass

    def apply_delta(
        self, old: DesiredState, delta: StateDelta, now: datetime | None = None
    ) -> Commit:
        """``delta`` as elements, or a full sync where ``keys.needs_full_sync`` says so."""
        return self._commit(lambda: self._dataplane.apply_delta(old, delta, now))

    def drift(self, applied: Applied) -> list[str]:
        """What in the table differs from ``applied`` (empty: nothing we can see).

        Structure from netlink dumps that carry no elements; hash sets probed
        key by key (sampled above 20,000 keys); never a listing of a big set.
        """
        with self.lock:
            plan = make_plan(applied.state, applied, self._dataplane)
        return plan.drift

    def counters(self) -> dict[str, tuple[int, int]]:
        """Named counters of our table (packets, bytes) from one GETOBJ dump: no set listing."""
        with self.lock:
            found = self._dataplane.counter_objects()
        if found:
            with self.lock:
                self._last_counters = found
        return found

    def table_exists(self) -> bool:
        with self.lock:
            return self._dataplane.table_exists()

    def remove(self) -> bool:
        """Delete our table; False if there was none.

        Existence is asked over netlink: ``nft list tables`` loads interval
        sets and takes a minute with a million elements (ARCHITECTURE.md).
        """
        with self.lock:
            self.expected = None
            return self._dataplane.remove()
