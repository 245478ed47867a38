"""Quarantine create over HTTP: requests/s and latency with 8 concurrent clients (SQLite).

.venv/bin/python bench/controller_quarantine.py [--requests 4000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import threading
import time

import httpx
from controller_common import (
    controller,
    cpu_seconds,
    database,
    percentile,
    seed_accounts,
    seed_quarantines,
    seed_world,
    token,
)

from edgectl.controller.auth import Role


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--existing", type=int, default=10_000, help="quarantines already held")
    args = parser.parse_args()
    with database() as (path, store):
        seed_world(store)
        seed_accounts(store, args.existing + args.requests)
        seed_quarantines(store, 0, args.existing)
        abuse = token(store, Role.ABUSE)
        with controller(path) as (base, pid):
            latencies: list[float] = []
            failures: list[int] = []
            lock = threading.Lock()
            deadline = time.monotonic() + args.seconds

            def client(worker: int) -> None:
                headers = {"Authorization": f"Bearer {abuse}"}
                with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
                    for i in range(worker, args.requests, args.clients):
                        if time.monotonic() > deadline:
                            return
                        body = {
                            "account": f"acct{args.existing + i}",
                            "mode": "smtp",
                            "reason": "bench",
                            "ticket": "BENCH-1",
                            "duration": 3600,
                        }
                        started = time.perf_counter()
                        response = http.post("/v1/quarantines", json=body)
                        took = time.perf_counter() - started
                        with lock:
                            latencies.append(took)
                            if response.status_code != 201:
                                failures.append(response.status_code)

            threads = [threading.Thread(target=client, args=(w,)) for w in range(args.clients)]
            started = time.perf_counter()
            cpu = cpu_seconds(pid)
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(pid) - cpu
    print(f"quarantine create, SQLite, {args.clients} clients, {args.existing} already held")
    print(f"  requests        {len(latencies)} ({len(failures)} failed)")
    print(f"  throughput      {len(latencies) / elapsed:8.1f} req/s")
    per_request = cpu / len(latencies) * 1000
    print(f"  controller CPU  {per_request:8.2f} ms a request (one process: the ceiling)")
    print(f"  latency p50     {percentile(latencies, 0.50) * 1000:8.1f} ms")
    print(f"  latency p99     {percentile(latencies, 0.99) * 1000:8.1f} ms")
    print(f"  latency max     {max(latencies) * 1000:8.1f} ms")
    slow = [i for i, v in enumerate(latencies) if v > 0.5]
    print(f"  over 500 ms     {len(slow)} (request order {slow[:10]})")


if __name__ == "__main__":
    main()
