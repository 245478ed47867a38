"""Delta since a recent cursor at 1k, 10k and 100k quarantines: its cost must
follow the number of changes, not the number of quarantines.

    .venv/bin/python bench/controller_delta.py [--sizes 1000 10000 100000] [--changes 10]

Measured in-process (store read + body assembly, what a request costs the
controller beyond HTTP), median of --rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from controller_common import database, seed_accounts, seed_quarantines, seed_world

from edgectl.controller.store import Store, desired, holds
from edgectl.model import QuarantineMode


def _median(store: Store, gateway: int, cursor: int | None, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        desired.serve(store, gateway, cursor)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    print(f"delta since a cursor {args.changes} changes back, SQLite, in-process")
    print(f"  {'quarantines':>11}  {'delta':>9}  {'snapshot':>9}  {'delta entries':>13}")
    for size in args.sizes:
        with database() as (_, store):
            gateway = seed_world(store)
            seed_accounts(store, size + args.changes)
            seed_quarantines(store, 0, size)
            cursor = desired.revision(store, gateway)
            for i in range(size, size + args.changes):
                spec = holds.QuarantineSpec(QuarantineMode.BLOCK, "bench", account=f"acct{i}")
                holds.quarantine(store, "bench", spec)
            served = json.loads(desired.serve(store, gateway, cursor).body)
            assert served["kind"] == "delta"
            entries = len(served["delta"]["quarantines"]["upserts"])
            delta = _median(store, gateway, cursor, args.rounds)
            snapshot = _median(store, gateway, None, 3)
        print(f"  {size:>11}  {delta * 1000:7.2f}ms  {snapshot * 1000:7.1f}ms  {entries:>13}")


if __name__ == "__main__":
    main()
