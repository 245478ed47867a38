"""API call -> key in the kernel, one gateway, with --held quarantines already
enforced against --baseline held, measured in the same run.

    .venv/bin/python bench/propagation_one_gateway.py            # 200k vs 10k, 5 rounds x 100
    .venv/bin/python bench/propagation_one_gateway.py --quick    # 200k vs 10k, 3 rounds x 30

Per size: a seeded SQLite store (sessions, quarantines, compiled entries,
audit records, through the bulk paths), a real controller process on
127.0.0.1, a real agent long-polling it over HTTP, and that agent's kernel:
a network namespace this script creates and always deletes.  The clock
starts before the POST /v1/quarantines and stops when a netlink element
lookup finds the key in the set that holds the seeded quarantines (found
from the kernel, so the figure does not depend on the agent's key layout).
Calls start --gap apart (0.1 s) rather than back to back, so that each is
measured on its own.  Rounds alternate which size goes first; the headline
is the median over rounds of p50(held) / p50(baseline), with the min-max.  The POST's own
round trip is reported beside it: the rest is the agent's share (long-poll
wake-up, delta, kernel commit).  Needs root (namespaces).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import BENCH_BASE, install_signal_handlers, namespace, run_id
from _results import Row, emit
from agent_common import Probe, agents, cpu_seconds, write_agent
from controller_common import (
    address,
    controller,
    database,
    seed_accounts,
    seed_quarantines,
    settle_store,
    token,
)

from edgectl.agent import kernel_readback as kr
from edgectl.agent.netlink.constants import NFPROTO_INET, NFT_SET_INTERVAL
from edgectl.controller.auth import Role
from edgectl.controller.store import Store, gateways
from edgectl.controller.store.catalog import create_pool
from edgectl.model import GatewaySettings, Pool, PoolKind, Prefix
from edgectl.testing.wait import wait_until

IPV4_ADDR = 7  # nft datatype id of ipv4_addr


@dataclass
class Side:
    held: int
    http: httpx.Client
    probe: Probe
    set_name: str
    pids: tuple[int, int] = (0, 0)  # controller, agent
    totals: list[list[float]] = field(default_factory=list)  # per round, seconds
    posts: list[list[float]] = field(default_factory=list)
    cpu: list[float] = field(default_factory=lambda: [0.0, 0.0])  # seconds over all rounds


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _seed(store: Store, held: int, extra: int) -> tuple[str, str]:
    """A /10 dynamic pool on gateway gw, ``held`` quarantined sessions; (agent, abuse) tokens."""
    create_pool(store, "bench", Pool("dyn", PoolKind.DYNAMIC, (Prefix.parse("100.64.0.0/10"),)))
    spec = gateways.GatewaySpec("gw", GatewaySettings(), ("dyn",))
    agent_token = gateways.create_gateway(store, "bench", spec)[1]
    seed_accounts(store, held + extra, batch=20_000)
    seed_quarantines(store, 0, held)
    return agent_token, token(store, Role.ABUSE)


def _key(index: int) -> bytes:
    return socket.inet_aton(address(index).address)


def _holding_set(probe: Probe, held: int, timeout: float) -> str:
    """The IPv4 set (or map) holding the seeded quarantines, once all of them are in."""
    wait_until(probe.has_table, timeout, what="the agent's first sync")
    found: list[str] = []

    def synced() -> bool:
        layout = kr.read_table(probe.sock, NFPROTO_INET, "edgectl")
        if layout is None:
            return False
        names = [
            n
            for n, s in sorted(layout.sets.items())
            if s.key_type == IPV4_ADDR and not s.flags & NFT_SET_INTERVAL
        ]
        found[:] = [n for n in names if probe.has(n, _key(0)) and probe.has(n, _key(held - 1))]
        return bool(found)

    wait_until(synced, timeout, what=f"{held:,} held keys in the kernel", interval=0.5)
    return found[0]


def _round(side: Side, first: int, count: int, timeout: float, gap: float) -> None:
    totals, posts = [], []
    cpu = [cpu_seconds(pid) for pid in side.pids]
    due = time.perf_counter()
    for index in range(first, first + count):
        body = {"account": f"acct{index}", "mode": "smtp", "reason": "bench"}
        key = _key(index)
        # Calls are paced (one every ``gap`` at most), not back to back: the
        # agent's work after a key is in (its journal, its drift check)
        # would otherwise land inside the next call's clock.
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        started = time.perf_counter()
        due = started + gap
        response = side.http.post("/v1/quarantines", json=body)
        posted = time.perf_counter()
        if response.status_code != 201:
            raise RuntimeError(f"POST: {response.status_code} {response.text[:300]}")
        deadline = posted + timeout
        while not side.probe.has(side.set_name, key):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"acct{index} not in the kernel within {timeout} s")
            time.sleep(0.0005)  # leave the CPUs to the processes being measured
        totals.append(time.perf_counter() - started)
        posts.append(posted - started)
    side.totals.append(totals)
    side.posts.append(posts)
    for n, pid in enumerate(side.pids):
        side.cpu[n] += cpu_seconds(pid) - cpu[n]


def _median_ms(rounds: list[list[float]]) -> str:
    per_round = [statistics.median(r) * 1000 for r in rounds]
    return f"{statistics.median(per_round):.1f} ms ({min(per_round):.1f}-{max(per_round):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--held", type=int, default=200_000)
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100, help="per round, per side")
    parser.add_argument("--timeout", type=float, default=10.0, help="per quarantine")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between call starts")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 30")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 3, 30
    command = ".venv/bin/python bench/propagation_one_gateway.py" + (
        " --quick" if args.quick else ""
    )
    install_signal_handlers()
    rid = run_id()
    print(f"load average at start: {_load()}")
    sides: list[Side] = []
    with ExitStack() as stack:
        for held in (args.baseline, args.held):
            path, store = stack.enter_context(database())
            started = time.monotonic()
            agent_token, abuse = _seed(store, held, args.rounds * args.requests)
            settle_store(store, path)
            print(f"seeded {held:,} held in {time.monotonic() - started:.0f} s")
            netns = stack.enter_context(namespace(f"{BENCH_BASE}-{rid}-p{held}"))
            base, controller_pid = stack.enter_context(controller(path))
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgectl-bench-")))
            config = write_agent(home, "gw", agent_token, netns, base)
            (agent,) = stack.enter_context(agents([config], home))
            probe = Probe(netns)
            stack.callback(probe.close)
            started = time.monotonic()
            set_name = _holding_set(probe, held, timeout=600)
            print(f"agent in sync with {held:,} held in {time.monotonic() - started:.1f} s")
            headers = {"Authorization": f"Bearer {abuse}"}
            http = stack.enter_context(httpx.Client(base_url=base, headers=headers, timeout=30))
            sides.append(Side(held, http, probe, set_name, (controller_pid, agent.pid)))
        baseline, big = sides
        print(f"load average before the rounds: {_load()}")
        for number in range(args.rounds):
            order = (baseline, big) if number % 2 == 0 else (big, baseline)
            for side in order:
                first = side.held + number * args.requests
                _round(side, first, args.requests, args.timeout, args.gap)
            p50 = [statistics.median(s.totals[-1]) * 1000 for s in sides]
            print(
                f"round {number + 1}: p50 {p50[0]:.1f} / {p50[1]:.1f} ms "
                f"({args.baseline:,} / {args.held:,} held), load {_load()}"
            )
    for side in sides:
        agent_share = [
            [total - post for total, post in zip(t, p, strict=True)]
            for t, p in zip(side.totals, side.posts, strict=True)
        ]
        p99 = [sorted(r)[int(0.99 * (len(r) - 1))] * 1000 for r in side.totals]
        print(
            f"{side.held:>7,} held: API call -> key in kernel p50 {_median_ms(side.totals)}, "
            f"p99 median {statistics.median(p99):.1f} ms; of which the POST "
            f"{_median_ms(side.posts)}, the rest (agent) {_median_ms(agent_share)}"
        )
        controller_ms, agent_ms = (c / (args.rounds * args.requests) * 1000 for c in side.cpu)
        print(
            f"{side.held:>7,} held: CPU a quarantine, controller {controller_ms:.1f} ms, "
            f"agent {agent_ms:.1f} ms (both include their idle-time work)"
        )
    print(f"load average at end: {_load()}")
    ratios = [
        statistics.median(b) / statistics.median(a)
        for b, a in zip(big.totals, baseline.totals, strict=True)
    ]
    value = statistics.median(ratios)
    emit(
        Row(
            key="api_to_kernel_scaling",
            target=(
                f"API call -> key in kernel, one gateway, at {args.held:,} held "
                f"<= 1.5x of {args.baseline:,} held"
            ),
            value=value,
            low=min(ratios),
            high=max(ratios),
            unit=f"x (p50 at {args.held // 1000}k / p50 at {args.baseline // 1000}k held)",
            clock=(
                "before POST /v1/quarantines -> netlink lookup finds the key in the "
                "agent's namespace (controller, agent, kernel)"
            ),
            runs=len(ratios),
            met=value <= 1.5,
            command=command,
        )
    )


if __name__ == "__main__":
    main()
