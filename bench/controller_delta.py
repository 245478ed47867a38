"""Delta since a recent cursor at 1k, 10k and 100k quarantines: its cost must
follow the number of changes, not the number of quarantines.

    .venv/bin/python bench/controller_delta.py [--sizes 1000 10000 100000] [--changes 10]

Measured in-process (store read + body assembly, what a request costs the
controller beyond HTTP).  Every size has its own seeded database, all open
at once, and the rounds are interleaved (one delta of each size per round,
in a rotating order), so the ratio largest/smallest is taken per round
under the same background load; printed: medians, and the per-round
ratio's median and min-max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import Row, emit
from controller_common import database, seed_accounts, seed_quarantines, seed_world

from edgectl.controller.store import Store, desired, holds
from edgectl.controller.store.core import BodyCache
from edgectl.model import QuarantineMode

TARGET_RATIO = 1.5  # the largest size's delta within 1.5x the smallest's


def _once(store: Store, gateway: int, cursor: int | None) -> float:
    # An empty body cache: the delta is assembled, as for the first agent that asks.
    store.bodies = BodyCache()
    started = time.perf_counter()
    desired.serve(store, gateway, cursor)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    print(f"delta since a cursor {args.changes} changes back, SQLite, in-process")
    with ExitStack() as stack:
        worlds = {}
        for size in sizes:
            _, store = stack.enter_context(database())
            gateway = seed_world(store)
            seed_accounts(store, size + args.changes)
            seed_quarantines(store, 0, size)
            cursor = desired.revision(store, gateway)
            for i in range(size, size + args.changes):
                spec = holds.QuarantineSpec(QuarantineMode.BLOCK, "bench", account=f"acct{i}")
                holds.quarantine(store, "bench", spec)
            served = json.loads(desired.serve(store, gateway, cursor).body)
            assert served["kind"] == "delta"
            assert len(served["delta"]["quarantines"]["upserts"]) == args.changes
            worlds[size] = (store, gateway, cursor)
        deltas: dict[int, list[float]] = {size: [] for size in sizes}
        for rnd in range(args.rounds):
            shift = rnd % len(sizes)
            for size in sizes[shift:] + sizes[:shift]:
                deltas[size].append(_once(*worlds[size]))
        snapshots = {
            size: statistics.median(_once(*worlds[size][:2], None) for _ in range(3))
            for size in sizes
        }
    print(f"  {'quarantines':>11}  {'delta':>9}  {'snapshot':>9}")
    for size in sizes:
        delta = statistics.median(deltas[size])
        print(f"  {size:>11}  {delta * 1000:7.2f}ms  {snapshots[size] * 1000:7.1f}ms")
    small, large = sizes[0], sizes[-1]
    ratios = [b / a for a, b in zip(deltas[small], deltas[large], strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"  delta at {large:,} / at {small:,}, per round: median {ratio:.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f}, n={len(ratios)})"
    )
    emit(
        Row(
            key="delta_cost_flat",
            target=f"delta of {args.changes} changes at {large:,} held <= {TARGET_RATIO}x "
            f"at {small:,} held",
            value=ratio,
            low=min(ratios),
            high=max(ratios),
            unit=f"x (median {statistics.median(deltas[large]) * 1000:.2f} ms at {large:,})",
            clock="desired.serve in-process, body cache empty: store read + body; per-round ratio",
            runs=len(ratios),
            met=ratio <= TARGET_RATIO,
            command=".venv/bin/python bench/controller_delta.py --sizes "
            + " ".join(map(str, args.sizes))
            + f" --rounds {args.rounds}",
        )
    )


if __name__ == "__main__":
    main()
