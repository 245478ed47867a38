"""Session bulk upsert over HTTP into SQLite: account bindings per second.

    .venv/bin/python bench/controller_sessions.py [--bindings 200000] [--batch 5000]

Three passes: new accounts; the same accounts moving to new addresses with
1% of them quarantined (their keys move in the same transaction); and
moves again with 10% quarantined.
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
from controller_common import BASE, controller, database, seed_quarantines, seed_world, token

from edgectl.controller.auth import Role


def _address(index: int) -> str:
    value = BASE + 1 + index
    return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))


def _bodies(count: int, batch: int, offset: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "bindings": [
                    {"account": f"acct{i}", "ipv4": _address(i + offset)}
                    for i in range(start, min(start + batch, count))
                ]
            }
        ).encode()
        for start in range(0, count, batch)
    ]


def _run(http: httpx.Client, bodies: list[bytes], deadline: float) -> tuple[int, float]:
    sent = 0
    started = time.perf_counter()
    for body in bodies:
        if time.monotonic() > deadline:
            break
        response = http.post(
            "/v1/sessions/bulk", content=body, headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        sent += response.json()["bindings"]
    return sent, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bindings", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=120.0, help="per pass")
    args = parser.parse_args()
    with database() as (path, store):
        seed_world(store)
        netops = token(store, Role.NETOPS)
        headers = {"Authorization": f"Bearer {netops}"}
        passes = [("new accounts", 0, 0), ("moves, 1% held", 1_000_000, 0.01)]
        passes.append(("moves, 10% held", 2_000_000, 0.10))
        print(f"session bulk upsert, SQLite, batches of {args.batch}, over HTTP")
        with (
            controller(path) as (base, _),
            httpx.Client(base_url=base, headers=headers, timeout=120) as http,
        ):
            held = 0
            for label, offset, fraction in passes:
                wanted = int(args.bindings * fraction)
                if wanted > held:
                    # Quarantine accounts acct0..: their bindings now move enforcement keys.
                    seed_quarantines(store, held, wanted - held)
                    held = wanted
                bodies = _bodies(args.bindings, args.batch, offset)
                sent, elapsed = _run(http, bodies, time.monotonic() + args.seconds)
                print(
                    f"  {label:18} {sent:8d} bindings in {elapsed:6.2f} s = {sent / elapsed:9.0f}/s"
                )


if __name__ == "__main__":
    main()
