#!/usr/bin/env python3
"""How fast a ``block`` hold stops a flood that was already running.

Run as root: ``.venv/bin/python bench/block_cutoff.py [--rounds 5] [--background 20000]``.

One lab topology (namespaces ``ectl-bench-<hex>-*``), ``table inet edgectl``
in the default tracked mode.  Each run: a flood from the subscriber
100.64.0.10 to the outside host 203.0.113.25 is started and flows (the
flow's conntrack entry is established), then ``Dataplane.apply_delta`` puts
the subscriber's ``block`` hold in force - the agent's own commit path,
conntrack cut included.  The figure is the time from the start of that
commit to the arrival of the flood's last packet at the receiver (same host
clock: ``time.monotonic`` in both).  A run is judged once a second flood,
from a subscriber not held, has delivered ``--watch`` seconds after the
commit: the gateway was forwarding all along.

Kinds, interleaved in a fresh random order each round: ``udp`` (datagrams
echoed by the receiver, so the entry is established), ``tcp-up`` (the
subscriber sends) and ``tcp-down`` (the subscriber downloads; only its ACKs
are its own packets).  ``--background`` idle conntrack entries from other
addresses sit in the table, so the cut's dump has something to wade
through.  Every namespace is deleted on exit.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import BENCH_BASE, install_signal_handlers, machine, median, print_table
from _results import Row, emit

from edgectl.agent.apply import Dataplane
from edgectl.lab.flows import Kind, Stream
from edgectl.lab.netns import in_netns
from edgectl.lab.topology import Topology, new_prefix, standard_topology
from edgectl.model.delta import diff
from edgectl.model.serial import state_from_data
from edgectl.testing.wait import wait_until

HELD, OTHER, NOISE, SERVER = "100.64.0.10", "100.64.0.11", "100.64.0.12", "203.0.113.25"
KINDS: tuple[Kind, ...] = ("udp", "tcp-up", "tcp-down")
GOAL_MS = 1000.0


def policy(revision: int, blocked: bool) -> dict[str, object]:
    return {
        "gateway": "bench",
        "revision": revision,
        "settings": {"hooks": ["forward"]},
        "pools": [{"name": "dyn4", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]}],
        "relays": [],
        "rate_limits": [],
        "exemptions": [],
        "quarantines": [{"key": HELD, "mode": "block"}] if blocked else [],
    }


def background(topology: Topology, count: int) -> None:
    """``count`` idle UDP conntrack entries (one per destination port) from another address."""
    with in_netns(topology.hosts["dyn4"].ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((NOISE, 0))
        for index in range(count):
            sock.sendto(b"x", (SERVER, 10000 + index % 50000))
    finally:
        sock.close()


def one_run(topology: Topology, dataplane: Dataplane, kind: Kind, port: int, watch: float) -> float:
    """Milliseconds from the hold's commit to the flood's last packet."""
    clear, held = state_from_data(policy(1, False)), state_from_data(policy(2, True))
    dataplane.full_sync(clear)
    client, server = topology.hosts["dyn4"].ns, topology.hosts["mx"].ns
    with (
        Stream(kind, client, HELD, server, SERVER, port) as flood,
        Stream(kind, client, OTHER, server, SERVER, port + 1) as control,
    ):
        if not wait_until(lambda: flood.snapshot()[0] > 0 and control.snapshot()[0] > 0, timeout=5):
            raise RuntimeError(f"{kind}: the floods never flowed")
        start = time.monotonic()
        dataplane.apply_delta(clear, diff(clear, held))
        if not wait_until(lambda: (control.snapshot()[1] or 0.0) > start + watch, timeout=10):
            raise RuntimeError(f"{kind}: the control flood stopped too")
        last = flood.snapshot()[1]
        assert last is not None
        return max(0.0, last - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--background", type=int, default=20_000)
    parser.add_argument("--watch", type=float, default=1.5, help="seconds watched after a hold")
    args = parser.parse_args()
    install_signal_handlers()
    topology = standard_topology(new_prefix(BENCH_BASE))
    results: dict[Kind, list[float]] = {kind: [] for kind in KINDS}
    try:
        topology.build()
        with Dataplane(topology.gateway_ns) as dataplane:
            dataplane.full_sync(state_from_data(policy(1, False)))
            background(topology, args.background)
            port = 20000
            for _ in range(args.rounds):
                kinds = list(KINDS)
                random.shuffle(kinds)
                for kind in kinds:
                    port += 2  # fresh ports: no entry of an earlier run is reused
                    results[kind].append(one_run(topology, dataplane, kind, port, args.watch))
    finally:
        topology.destroy()
    rows = [
        (kind, f"{median(v):.1f}", f"{min(v):.1f}", f"{max(v):.1f}", len(v))
        for kind, v in results.items()
    ]
    print(f"machine: {machine()}; background conntrack entries: {args.background}")
    print_table(
        "block cut-off: hold's commit -> flood's last packet (ms)",
        ("flood", "median", "min", "max", "runs"),
        rows,
    )
    every = [value for values in results.values() for value in values]
    emit(
        Row(
            key="block_cutoff",
            target="block stops a running flood < 1 s after the hold's commit",
            value=median(every),
            low=min(every),
            high=max(every),
            unit="ms",
            clock="start of the commit (delta + conntrack cut) to the last packet received",
            runs=len(every),
            met=max(every) < GOAL_MS,
            command=f"bench/block_cutoff.py --rounds {args.rounds} --background {args.background}",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
