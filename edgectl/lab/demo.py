"""``edgectl demo``: a lab gateway enforcing the embedded policy, shown with real TCP.

Builds the standard lab (network namespaces only), applies
``demo_policy.toml`` through the same code path as ``edgectl apply``, makes
real connections from each kind of subscriber, prints what the kernel did,
and removes every namespace it made.
"""

from __future__ import annotations

import argparse
import tomllib
from importlib import resources

from edgectl.agent.apply import Dataplane
from edgectl.lab.probe import Listener, Outcome, connect
from edgectl.lab.topology import Topology, new_prefix, standard_topology
from edgectl.model.lint import check
from edgectl.model.policy import DesiredState
from edgectl.model.serial import state_from_data

MAIL_PORTS = (25, 465, 587)


def demo_policy() -> DesiredState:
    text = resources.files("edgectl.lab").joinpath("demo_policy.toml").read_text()
    return check(state_from_data(tomllib.loads(text)))


def _cases(topology: Topology) -> list[tuple[str, str, str, str, int, Outcome]]:
    hosts = topology.hosts
    dyn4, dyn6, static4 = hosts["dyn4"], hosts["dyn6"], hosts["static4"]
    mx, relay = hosts["mx"], hosts["relay"]
    return [
        ("dynamic IPv4 -> outside MX :25", dyn4.ns, dyn4.ipv4_all[0], mx.ipv4, 25, Outcome.RESET),
        (
            "dynamic IPv4 -> outside MX :587",
            dyn4.ns,
            dyn4.ipv4_all[0],
            mx.ipv4,
            587,
            Outcome.CONNECTED,
        ),
        (
            "dynamic IPv4 -> outside MX :465",
            dyn4.ns,
            dyn4.ipv4_all[0],
            mx.ipv4,
            465,
            Outcome.CONNECTED,
        ),
        (
            "dynamic IPv4 -> ISP relay :25",
            dyn4.ns,
            dyn4.ipv4_all[0],
            relay.ipv4,
            25,
            Outcome.CONNECTED,
        ),
        ("dynamic IPv6 -> outside MX :25", dyn6.ns, dyn6.ipv6, mx.ipv6, 25, Outcome.RESET),
        ("dynamic IPv6 -> ISP relay :25", dyn6.ns, dyn6.ipv6, relay.ipv6, 25, Outcome.CONNECTED),
        ("static pool -> outside MX :25", static4.ns, static4.ipv4, mx.ipv4, 25, Outcome.CONNECTED),
        (
            "exempted account -> outside MX :25",
            dyn4.ns,
            dyn4.ipv4_all[2],
            mx.ipv4,
            25,
            Outcome.CONNECTED,
        ),
        (
            "quarantined (smtp) -> ISP relay :587",
            dyn4.ns,
            dyn4.ipv4_all[1],
            relay.ipv4,
            587,
            Outcome.RESET,
        ),
    ]


def run(args: argparse.Namespace) -> int:
    state = demo_policy()
    topology = standard_topology(new_prefix("ectl-demo"))
    failures = 0
    try:
        topology.build()
        hosts = topology.hosts
        servers = [
            Listener(hosts[name].ns, hosts[name].addresses, MAIL_PORTS, hold=False)
            for name in ("mx", "relay")
        ]
        try:
            with Dataplane(topology.gateway_ns) as dataplane:
                result = dataplane.full_sync(state)
                print(
                    f"applied revision {result.revision} to gateway namespace "
                    f"{topology.gateway_ns} in {result.seconds * 1000:.1f} ms\n"
                )
                for label, ns, src, dst, port, expected in _cases(topology):
                    outcome = connect(ns, dst, port, src=src, timeout=args.timeout)
                    mark = "ok " if outcome is expected else "FAIL"
                    failures += outcome is not expected
                    print(f"  {mark} {label:<40} {src:>24} -> {outcome.name}")
                print("\ncounters:")
                for name, (packets, _) in sorted(dataplane.counters().items()):
                    print(f"  {name:<28} {packets}")
        finally:
            for server in servers:
                server.close()
    finally:
        topology.destroy()
    print("\nall behaviours as expected" if not failures else f"\n{failures} unexpected outcome(s)")
    return 0 if not failures else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser(
        "demo", help="build a lab gateway in network namespaces and show enforcement (root)"
    )
    demo.add_argument("--timeout", type=float, default=1.0, help="seconds per connection attempt")
    demo.set_defaults(func=run)
