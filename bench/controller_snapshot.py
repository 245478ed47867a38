"""Desired-state snapshot for a gateway with 100,000 active quarantines.

    .venv/bin/python bench/controller_snapshot.py [--quarantines 100000]

Targets (issue 3): under 2 s and under 300 MB peak RSS for the controller
process.  The store is seeded by this process; a separate controller
process serves, so its VmHWM counts serving only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _results import Row, emit
from controller_common import (
    controller,
    database,
    peak_rss_mb,
    seed_accounts,
    seed_quarantines,
    seed_world,
    token,
)

from edgectl.controller.auth import Role
from edgectl.model import state_from_data

TARGET_S = 2.0
TARGET_MB = 300.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quarantines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with database() as (path, store):
        started = time.perf_counter()
        seed_world(store)
        seed_accounts(store, args.quarantines)
        seeded_sessions = time.perf_counter() - started
        started = time.perf_counter()
        seed_quarantines(store, 0, args.quarantines)
        seeded_holds = time.perf_counter() - started
        viewer = token(store, Role.VIEWER)
        with (
            controller(path) as (base, pid),
            httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {viewer}"}, timeout=60
            ) as http,
        ):
            idle = peak_rss_mb(pid)
            times = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                response = http.get("/v1/gateways/gw/desired-state")
                response.raise_for_status()
                body = response.content
                wire = response.num_bytes_downloaded
                times.append(time.perf_counter() - started)
            peak = peak_rss_mb(pid)
        started = time.perf_counter()
        document = json.loads(body)
        state = state_from_data(document["state"])
        parsed = time.perf_counter() - started
    print(f"snapshot, SQLite, {args.quarantines} active quarantines on one gateway")
    print(f"  seeding          sessions {seeded_sessions:.1f} s, quarantines {seeded_holds:.1f} s")
    print(
        f"  entries served   {len(state.quarantines)} "
        f"({len(body) / 1e6:.1f} MB of JSON, {wire / 1e6:.1f} MB gzipped on the wire)"
    )
    print(f"  request time     median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    print(f"  controller RSS   {idle:.0f} MB idle, {peak:.0f} MB peak (VmHWM)")
    print(f"  agent-side parse {parsed:.2f} s (json + state_from_data, not the controller)")
    request = statistics.median(times)
    emit(
        Row(
            key=f"snapshot_{args.quarantines // 1000}k",
            target=f"snapshot, {args.quarantines:,} quarantines < {TARGET_S:g} s, "
            f"controller peak < {TARGET_MB:g} MB",
            value=request,
            low=min(times),
            high=max(times),
            unit=f"s (controller peak RSS {peak:.0f} MB)",
            clock="GET desired-state over HTTP on 127.0.0.1, whole body received",
            runs=len(times),
            met=request < TARGET_S and peak < TARGET_MB,
            command=f".venv/bin/python bench/controller_snapshot.py "
            f"--quarantines {args.quarantines} --rounds {args.rounds}",
        )
    )


if __name__ == "__main__":
    main()
