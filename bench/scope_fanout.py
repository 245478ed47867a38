"""Quarantine create time against the number of gateways serving the same pools.

    .venv/bin/python bench/scope_fanout.py                 # 1 / 100 / 1,000 gateways
    .venv/bin/python bench/scope_fanout.py --rounds 3 --requests 20

One SQLite store and controller process per fleet size, every gateway
serving the one dynamic pool the held accounts are in, on 127.0.0.1.  Each
round sends --requests quarantine creates (POST /v1/quarantines, one client,
one request at a time: what a request costs, not queueing) to every store in
turn, the order rotating round by round; the creates are lifted afterwards,
untimed, so each round starts alike.  Printed per size: the median over
rounds of each round's median, with the min-max, and the ratio of each
round's median to the 1-gateway store's in the same round.

For the figures before a change: copy this file into a checkout of the code
before it (git worktree add --detach) and run it there with that checkout's
own .venv (an editable install wins over PYTHONPATH).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import install_signal_handlers
from controller_common import database, netops_client, seed_accounts, seed_world

import edgectl
from edgectl.controller.store import Store, gateways
from edgectl.model import GatewaySettings


@dataclass
class Side:
    gateways: int
    http: httpx.Client
    rounds: list[list[float]] = field(default_factory=list)  # create seconds, per round


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _seed(store: Store, count: int, accounts: int) -> None:
    seed_world(store)  # pool "dyn" (100.64.0.0/10) and its gateway "gw"
    for n in range(1, count):
        spec = gateways.GatewaySpec(f"gw{n}", GatewaySettings(), ("dyn",))
        gateways.create_gateway(store, "bench", spec)
    seed_accounts(store, accounts)


def _round(side: Side, number: int, requests: int) -> None:
    created, took = [], []
    for n in range(requests):
        body = {"account": f"acct{number * requests + n}", "mode": "smtp", "reason": "bench"}
        started = time.perf_counter()
        response = side.http.post("/v1/quarantines", json=body)
        took.append(time.perf_counter() - started)
        if response.status_code != 201:
            raise RuntimeError(f"create: {response.status_code} {response.text[:300]}")
        created.append(response.json()["quarantine"]["id"])
    side.rounds.append(took)
    for ident in created:
        lifted = side.http.post(f"/v1/quarantines/{ident}/lift", json={"reason": "bench"})
        if lifted.status_code != 200:
            raise RuntimeError(f"lift: {lifted.status_code} {lifted.text[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateways", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=30, help="creates per round per store")
    args = parser.parse_args()
    install_signal_handlers()  # SIGTERM unwinds too: controllers stopped, stores removed
    print(f"code: {Path(edgectl.__file__).resolve().parent.parent}")
    print(f"load average at start: {_load()}")
    sides: list[Side] = []
    with ExitStack() as stack:
        for count in args.gateways:
            path, store = stack.enter_context(database())
            started = time.monotonic()
            _seed(store, count, args.rounds * args.requests)
            http = netops_client(stack, path, store)
            print(f"seeded {count:,} gateways in {time.monotonic() - started:.0f} s")
            sides.append(Side(count, http))
        print(f"load average after seeding: {_load()}")
        for number in range(args.rounds):
            shift = number % len(sides)
            for side in sides[shift:] + sides[:shift]:
                _round(side, number, args.requests)
            medians = " / ".join(f"{statistics.median(s.rounds[-1]) * 1000:.1f}" for s in sides)
            print(f"round {number + 1}: create median {medians} ms, load {_load()}")
    baseline = sides[0]
    for side in sides:
        medians = [statistics.median(r) * 1000 for r in side.rounds]
        ratios = [
            statistics.median(mine) / statistics.median(base)
            for mine, base in zip(side.rounds, baseline.rounds, strict=True)
        ]
        print(
            f"create at {side.gateways:>5,} gateways: median {statistics.median(medians):.1f} ms "
            f"({min(medians):.1f}-{max(medians):.1f}), x{statistics.median(ratios):.2f} "
            f"of {baseline.gateways:,} gateway ({min(ratios):.2f}-{max(ratios):.2f})"
        )
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    main()
