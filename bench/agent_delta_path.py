#!/usr/bin/env python3
"""The agent's delta path: a one-key delta in hand -> the kernel committed it.

Run as root: ``.venv/bin/python bench/agent_delta_path.py [--sizes 10000,100000,1000000]
[--deltas 200]``.

For each size, in a fresh namespace ``ectl-bench-<hex>-dpath-<size>``: the
real ``Agent`` (daemon/loop.py) with the real ``Kernel`` (libnftables +
netlink handles kept open) and a real ``StateStore`` persisting in the
background as the daemon does, gets the bench state (bench/_common.py
``build_state``) as a snapshot (a full sync), then ``--deltas`` deltas that
alternately quarantine a fresh key and lift it.  Each is handed to
``Agent.handle`` exactly as the sync loop hands a controller answer.

Two clocks per delta, both starting when ``handle`` is called with the
delta in hand:

* to commit: until ``Kernel.apply_delta`` returned (the kernel's batch was
  acknowledged): the row ``delta_path_<size>``, target <= 2 ms;
* whole call: until ``handle`` returned, i.e. including the new in-memory
  state and the hand-off to the state-file writer.

The cyclic GC is left on, as in the daemon.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (
    BENCH_BASE,
    Layout,
    build_state,
    install_signal_handlers,
    key_values,
    machine,
    namespace,
    percentile,
    print_table,
    run_id,
)
from _results import Row, emit

from edgectl.agent.daemon.kernel import Commit, Kernel
from edgectl.agent.daemon.loop import Agent, LoopSettings
from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.daemon.protocol import Delta, Snapshot
from edgectl.agent.persist import StateStore
from edgectl.model.delta import KeyedChanges, StateDelta
from edgectl.model.policy import DesiredState, Quarantine, QuarantineMode
from edgectl.model.prefix import Prefix

GATEWAY = "bench-gw"


class _NoController:
    def desired(self, since: int | None, wait: float, epoch: str | None = None) -> Any:
        raise AssertionError("the bench hands answers to the agent itself")

    def report(self, applied_revision: int, detail: Any, offenders: Any) -> bool:
        return True


class _TimedKernel(Kernel):
    """The real kernel port, noting when each delta's commit returned."""

    committed = 0.0

    def apply_delta(self, old: DesiredState, delta: StateDelta, now: Any = None) -> Commit:
        commit = super().apply_delta(old, delta, now)
        self.committed = time.perf_counter()
        return commit


def _fresh_key(state: DesiredState, size: int) -> Prefix:
    layout = Layout.of(5000)
    for value in key_values(layout, size + 1000):
        key = Prefix(4, value, 32)
        if key not in state.quarantines and key not in state.exemptions:
            return key
    raise RuntimeError("no free key")


def measure(size: int, deltas: int, tag: str) -> dict[str, list[float]]:
    state = build_state(size, revision=1)
    state = DesiredState(**{**{f: getattr(state, f) for f in state.__slots__}, "gateway": GATEWAY})
    key = _fresh_key(state, size)
    with (
        namespace(f"{BENCH_BASE}-{tag}-dpath-{size}") as ns,
        tempfile.TemporaryDirectory(prefix="ectl-bench-") as tmp,
    ):
        kernel = _TimedKernel(ns)
        agent = Agent(
            LoopSettings.defaults(GATEWAY),
            kernel,
            _NoController(),
            StateStore(Path(tmp)),
            Metrics(GATEWAY),
            persist_in_background=True,
        )
        try:
            agent.handle(Snapshot(state.revision, state))
            agent.persister.write_pending()
            to_commit: list[float] = []
            whole: list[float] = []
            revision = state.revision
            for index in range(deltas):
                if index % 2 == 0:
                    change = KeyedChanges(upserts=(Quarantine(key, QuarantineMode.SMTP),))
                else:
                    change = KeyedChanges(removals=(key,))
                delta = StateDelta(GATEWAY, revision, revision + 1, quarantines=change)
                answer = Delta(revision + 1, delta)
                start = time.perf_counter()
                if not agent.handle(answer):
                    raise RuntimeError("delta not applied")
                done = time.perf_counter()
                assert agent.applied is not None and agent.applied.state.revision == revision + 1
                revision += 1
                to_commit.append((kernel.committed - start) * 1000)
                whole.append((done - start) * 1000)
                # A controller's deltas arrive apart; the writer thread
                # journals each before the next (as it would in service).
                agent.persister.write_pending()
            return {"commit": to_commit, "whole": whole}
        finally:
            kernel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--deltas", type=int, default=200)
    args = parser.parse_args()
    install_signal_handlers()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# agent_delta_path: sizes {sizes}, {args.deltas} deltas each")
    print(f"machine: {machine()}")
    tag = run_id()
    rows = []
    for size in sizes:
        got = measure(size, args.deltas, tag)
        commit, whole = got["commit"], got["whole"]
        rows.append(
            [
                f"{size:,}",
                len(commit),
                f"{statistics.median(commit):.3f}",
                f"{min(commit):.3f}-{max(commit):.3f}",
                f"{percentile(commit, 99):.3f}",
                f"{statistics.median(whole):.3f}",
                f"{percentile(whole, 99):.3f}",
            ]
        )
        label = f"{size // 1000}k" if size < 1_000_000 else f"{size // 1_000_000}m"
        value = statistics.median(commit)
        emit(
            Row(
                key=f"delta_path_{label}",
                target=f"agent delta path at {size:,} keys <= 2 ms",
                value=value,
                low=min(commit),
                high=max(commit),
                unit="ms",
                clock="Agent.handle(delta) called -> Kernel.apply_delta returned (batch acked)",
                runs=len(commit),
                met=value <= 2.0,
                command=f".venv/bin/python bench/agent_delta_path.py --sizes {size} "
                f"--deltas {args.deltas}",
            )
        )
    print_table(
        "One-key delta through the agent (ms): delta in hand -> kernel commit, and whole call",
        ["keys", "n", "to commit median", "min-max", "p99", "whole call median", "p99"],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
