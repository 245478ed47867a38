"""Propagation: quarantine API call returned -> element in force on every gateway.

Two real lab gateways (standard topologies, with a TCP check through them)
plus ``--extra`` further agents, each with its own network namespace as its
kernel, all long-polling one controller process (SQLite) over HTTP on
127.0.0.1.  Every gateway serves the same /10 dynamic pool, so every
quarantine reaches every agent.  "In force" is read from each namespace's
kernel: a GETSETELEM lookup of the key in ``q_smtp_4`` (what the forward
chain matches), polled in a loop by this process.

.venv/bin/python bench/agent_propagation.py [--extra 50] [--quarantines 200]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import BENCH_BASE, install_signal_handlers, namespace, run_id
from agent_common import Probe, agents, cpu_seconds, wait_for, write_agent
from controller_common import address, controller, seed_accounts, token

from edgectl.controller.auth import Role
from edgectl.controller.store import Store, gateways
from edgectl.controller.store.catalog import create_pool
from edgectl.lab.probe import Listener, Outcome, connect
from edgectl.lab.topology import new_prefix, standard_topology
from edgectl.model import GatewaySettings, Pool, PoolKind, Prefix

# acct9 is 100.64.0.10 (address(i) = 100.64.0.0 + 1 + i): the lab's dyn4 host,
# so the first quarantine can be checked with a real TCP connect too.
LAB_ACCOUNT = 9
MX4 = "203.0.113.25"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extra", type=int, default=50, help="agents besides the two lab gateways")
    parser.add_argument("--quarantines", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=5.0, help="per quarantine")
    args = parser.parse_args()
    install_signal_handlers()
    rid = run_id()
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-agent-") as root, ExitStack() as stack:
        workdir = Path(root)
        db = workdir / "controller.db"
        store = Store.open(f"sqlite:///{db}")
        create_pool(store, "bench", Pool("dyn", PoolKind.DYNAMIC, (Prefix.parse("100.64.0.0/10"),)))
        seed_accounts(store, LAB_ACCOUNT + 1 + args.quarantines)
        abuse = token(store, Role.ABUSE)
        names = [f"lab{i}" for i in range(2)] + [f"gw{i:02d}" for i in range(args.extra)]
        tokens = {}
        for name in names:
            spec = gateways.GatewaySpec(name, GatewaySettings(), ("dyn",))
            tokens[name] = gateways.create_gateway(store, "bench", spec)[1]
        store.close()

        labs = [standard_topology(new_prefix(f"{BENCH_BASE}-{rid}")) for _ in range(2)]
        for topo in labs:
            stack.callback(topo.destroy)
            topo.build()
        netns = {"lab0": labs[0].gateway_ns, "lab1": labs[1].gateway_ns}
        for name in names[2:]:
            netns[name] = stack.enter_context(namespace(f"{BENCH_BASE}-{rid}-{name}"))
        listeners = [stack.enter_context(Listener(t.hosts["mx"].ns, [MX4], [587])) for t in labs]
        del listeners

        base, controller_pid = stack.enter_context(controller(db))
        configs = [write_agent(workdir, n, tokens[n], netns[n], base) for n in names]
        started = time.monotonic()
        procs = stack.enter_context(agents(configs, workdir))
        probes = {name: Probe(netns[name]) for name in names}
        for probe in probes.values():
            stack.callback(probe.close)
        wait_for(
            lambda: all(p.has_table() for p in probes.values()), 120, "every agent's first sync"
        )
        print(f"{len(names)} agents in sync {time.monotonic() - started:.1f} s after start")

        http = stack.enter_context(
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {abuse}"}, timeout=30)
        )
        cpu_before = (cpu_seconds(controller_pid), sum(cpu_seconds(p.pid) for p in procs))
        observer_before = time.process_time()
        all_in: list[float] = []
        last_gateway: list[str] = []
        per_gateway: list[float] = []
        for n in range(args.quarantines):
            index = LAB_ACCOUNT + n
            key = socket.inet_aton(address(index).address)
            body = {"account": f"acct{index}", "mode": "smtp", "reason": "bench"}
            response = http.post("/v1/quarantines", json=body)
            returned = time.monotonic()
            response.raise_for_status()
            pending = dict(probes)
            while pending:
                for name, probe in list(pending.items()):
                    if probe.has("q_smtp_4", key):
                        per_gateway.append(time.monotonic() - returned)
                        del pending[name]
                        if not pending:
                            last_gateway.append(name)
                if time.monotonic() - returned > args.timeout:
                    raise TimeoutError(f"quarantine {n}: not in force on {sorted(pending)}")
                time.sleep(0.0005)  # leave the CPUs to the agents being measured
            all_in.append(time.monotonic() - returned)
            if n == 0:
                for topo in labs:
                    outcome = connect(topo.hosts["dyn4"].ns, MX4, 587, src="100.64.0.10")
                    assert outcome is Outcome.RESET, f"lab gateway let it through: {outcome}"
        print(
            f"propagation to all {len(names)} gateways over {len(all_in)} quarantines: "
            f"p50 {ms(all_in, 50)}, p99 {ms(all_in, 99)}, max {ms(all_in, 100)}"
        )
        print(
            f"per gateway ({len(per_gateway)} samples): "
            f"p50 {ms(per_gateway, 50)}, p99 {ms(per_gateway, 99)}"
        )
        controller_cpu = cpu_seconds(controller_pid) - cpu_before[0]
        agents_cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before[1]
        # This process's kernel polling shares the same CPUs: say how much.
        observer_cpu = time.process_time() - observer_before
        print(
            f"CPU per quarantine: controller {controller_cpu / len(all_in) * 1000:.0f} ms, "
            f"all agents together {agents_cpu / len(all_in) * 1000:.0f} ms "
            f"({agents_cpu / len(all_in) / len(names) * 1000:.1f} ms each), "
            f"this observer {observer_cpu / len(all_in) * 1000:.0f} ms"
        )
        slowest = sorted(zip(all_in, last_gateway, strict=True), reverse=True)[:5]
        print("slowest: " + ", ".join(f"{t * 1000:.0f} ms (last: {g})" for t, g in slowest))
        print("TCP check through both lab gateways after the first quarantine: refused (RST)")


if __name__ == "__main__":
    main()
