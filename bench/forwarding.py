#!/usr/bin/env python3
"""TCP connection setups per second through a gateway namespace, with and without edgectl.

Run as root: ``.venv/bin/python bench/forwarding.py [--keys 1000000] [--rounds 30]``.

Seven copies of the lab topology (hosts dyn4 100.64.0.10, static4
100.65.0.10 and the outside mx 203.0.113.25; namespaces
``ectl-bench-<hex>-<a|b|d|e|f|s|m>-*``), identical but for the gateway's ruleset:

* ``a``: no table at all - the baseline (no conntrack in that namespace);
* ``b``: ``table inet edgectl`` with the full state (``--keys`` quarantined
  or exempted keys, 5,000 pool /24s; the static pool carries a rate-limit
  profile of 1,000,000/minute, burst 1,000,000 and, with ``--profile full``,
  concurrency and per-destination ct-count caps of 100,000), loaded by
  ``Dataplane.full_sync``;
* ``d``: 10,000 ``ip saddr X drop`` rules in one forward chain, for addresses
  that never match (fail2ban/firewalld style), no conntrack shortcut;
* ``e``: one rule, ``ct state established,related accept``: what conntrack
  alone costs, to split b's cost into conntrack and edgectl's lookups;
* ``f``: the same state as b with ``settings.track_non_mail = false``:
  non-mail traffic is ``notrack``ed at raw priority and checked per packet
  (one hash lookup); mail stays tracked (the ct-count caps need it);
* ``s``: f without the ct-count caps (the static pool's profile keeps its
  rate meter only): the table holds no ct expression, so the kernel runs no
  conntrack or defrag hooks in that namespace at all;
* ``m``: the least ruleset a person would write by hand for what ``s`` does
  to non-mail traffic, no conntrack: the same block and walled-garden keys
  (plain timeout sets), a blocked key's every packet dropped, every other
  packet that does not open a TCP connection accepted, opening packets
  checked against the walled keys and the mail ports.  Its cost is the floor
  of that behaviour (a hash lookup on every packet), so ``s80`` against
  ``m80`` is what edgectl adds on top of it.

Each round runs every condition for ``--seconds`` in total, cut into
``--slices`` slices that are interleaved (a fresh random order for each pass
over the conditions), so that within a round every condition samples the
same few seconds of background load; a round's figure for a condition is its
slices summed.  Reported as medians over rounds, medians of per-round ratios
and best/best:

* ``a80``  dyn4 -> mx:80 through ``a``;   ``b80`` the same through ``b``
  (non-mail traffic, tracked: reported against a80, target >= 0.95 of e80);
  ``d80``, ``e80``, ``f80`` (target >= 0.90 of e80: its caps need conntrack),
  ``s80`` (target >= 0.95 of a80), ``m80`` (reported) likewise;
* ``a25``  static4 -> mx:25 through ``a``; ``c25`` the same through ``b``
  (allowed mail from a rate-limited static pool, the longest path; target
  >= 0.85 of a25); ``e25`` likewise.

Clients and the listener run in worker processes (``--arrangement``): the
client loop (connect, then close with RST so no TIME_WAIT piles up) in one
process, the listeners (accept and close at once) in another, pinned to
different CPUs with ``pinned``; ``procs`` leaves placement to the
scheduler; ``threads`` puts the listener thread in the client's process
(they then share one GIL).  Every namespace is deleted on exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (
    BENCH_BASE,
    FIXED_NOW,
    MASK56,
    build_state,
    held_elements,
    install_signal_handlers,
    key_set,
    machine,
    median,
    peak_rss_mib,
    percentile,
    print_table,
    run,
    run_id,
)
from _results import Row, emit

from edgectl.agent.apply import Dataplane
from edgectl.lab.netns import in_netns, set_sysctl
from edgectl.lab.probe import Listener, Outcome, connect
from edgectl.lab.topology import Topology, standard_topology
from edgectl.model.policy import DesiredState

MX = "203.0.113.25"
DYN4 = "100.64.0.10"
STATIC4 = "100.65.0.10"
PORTS = (80, 25)
HOSTS = ("dyn4", "static4", "mx")
CONNTRACK_COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"
LINGER_RST = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # struct linger {1, 0}
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
WORKER_TIMEOUT_S = 120.0
BACKLOG = 65535  # with net.core.somaxconn raised to match in the mx namespaces


# -- worker processes ---------------------------------------------------------


def client_loop(
    ns: str, src: str, dst: str, port: int, seconds: float, limit: int
) -> dict[str, float]:
    """connect+close(RST) in a loop: successes, failures, elapsed and CPU seconds.

    Bounded by ``limit`` attempts and ``seconds`` (plus one 1 s connect timeout).
    ``cpu`` is this thread's user+system time: with the kernel's tick-based
    accounting (no IRQ_TIME_ACCOUNTING) it includes the softirq work done
    in this thread's context, i.e. forwarding the SYN through the gateway's
    hooks and the SYN-ACK back, and it does not grow while other processes
    hold the CPU - unlike the wall-clock rate.
    """
    ok = failed = 0
    with in_netns(ns):
        before = resource.getrusage(resource.RUSAGE_THREAD)
        start = time.perf_counter()
        deadline = start + seconds
        for _ in range(limit):
            if time.perf_counter() >= deadline:
                break
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((src, 0))
                sock.settimeout(1.0)
                try:
                    sock.connect((dst, port))
                    ok += 1
                except OSError as exc:
                    if exc.errno not in (errno.ECONNREFUSED, errno.ETIMEDOUT, None):
                        raise
                    failed += 1
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_THREAD)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"ok": ok, "failed": failed, "seconds": elapsed, "cpu": cpu}


def _accept_forever(server: socket.socket) -> None:
    """Accept and close at once; a blocking accept releases the GIL while it waits."""
    while True:
        try:
            conn, _ = server.accept()
        except ConnectionAbortedError:
            continue
        except OSError:
            return  # the socket was closed: the worker is stopping
        conn.close()


def worker(role: str, listen: list[str]) -> int:
    """Serve listeners in the given namespaces and/or run client requests from stdin.

    The listeners are plain blocking accept loops, one thread per socket,
    not the lab's selector ``Listener``: at 20-40k setups/s its per-accept
    bookkeeping let the accept queue overflow (TcpExtListenOverflows), and
    every overflow costs the client a 1 s SYN retransmission.  stdin lines
    are JSON client requests answered with one JSON line each; EOF stops it.
    """
    servers = []
    for ns in listen:
        for port in PORTS:
            with in_netns(ns):
                server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((MX, port))
            server.listen(BACKLOG)
            servers.append(server)
            threading.Thread(target=_accept_forever, args=(server,), daemon=True).start()
    try:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            if role == "server":
                raise SystemExit("this worker only serves")
            print(json.dumps(client_loop(**json.loads(line))), flush=True)
    finally:
        for server in servers:
            server.shutdown(socket.SHUT_RDWR)
            server.close()
    return 0


class Worker:
    """A worker subprocess of this script, optionally pinned to one CPU."""

    def __init__(self, role: str, listen: list[str], cpu: int | None) -> None:
        cmd = [sys.executable, __file__, "--worker", role, *[f"--listen={ns}" for ns in listen]]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._expect()

    def _expect(self) -> dict[str, float]:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait(WORKER_TIMEOUT_S)}")
        answer: dict[str, float] = json.loads(line)
        return answer

    def measure(self, **request: object) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._expect()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- topologies and rulesets ---------------------------------------------------


@contextmanager
def topology(prefix: str) -> Iterator[Topology]:
    standard = standard_topology(prefix)
    specs = [spec for spec in standard.specs if spec.name in HOSTS]
    with Topology(prefix, specs, standard.pools) as built:
        # Room for bursts the listener has not accepted yet (per namespace).
        set_sysctl(built.hosts["mx"].ns, "net.core.somaxconn", BACKLOG)
        set_sysctl(built.hosts["mx"].ns, "net.ipv4.tcp_max_syn_backlog", BACKLOG)
        yield built


def linear_chain_script(rules: int) -> str:
    """``rules`` per-address drop rules for addresses that never match (100.127.0.0/16)."""
    lines = [
        "table inet bench_linear {",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
    ]
    base = 0x647F0000  # 100.127.0.0: subscriber space, no lab host there
    for i in range(rules):
        lines.append(f"\t\tip saddr {socket.inet_ntoa((base + i + 1).to_bytes(4, 'big'))} drop")
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


# The price of conntrack alone: what any stateful table pays before its first lookup.
CT_ONLY_SCRIPT = """table inet bench_ct {
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t}
}
"""


def minimal_script(state: DesiredState) -> str:
    """Gateway m: what ``s`` does to non-mail traffic, written by hand (see the module doc).

    The same block and walled-garden keys with the same timeouts, in the
    plain sets ``handwritten_script`` writes; the mail ports lead to an
    empty chain (mail is not measured through m).  No conntrack: nothing
    here needs it.
    """
    held = held_elements(state)
    names = [f"q_{mode}_{version}" for mode in ("block", "walled_garden") for version in (4, 6)]
    return (
        "\n".join(
            [
                "table inet bench_minimal {",
                *(key_set(name, held.get(name, [])) for name in names),
                "\tchain mail {\n\t}",
                "\tchain forward {",
                "\t\ttype filter hook forward priority filter; policy accept;",
                "\t\tip saddr @q_block_4 drop",
                f"\t\tip6 saddr & {MASK56} @q_block_6 drop",
                "\t\ttcp flags & (syn | ack) != syn accept",
                "\t\tip saddr @q_walled_garden_4 drop",
                f"\t\tip6 saddr & {MASK56} @q_walled_garden_6 drop",
                "\t\ttcp dport { 25, 465, 587 } jump mail",
                "\t}",
                "}",
            ]
        )
        + "\n"
    )


def nft(ns: str, *args: str, stdin: str | None = None) -> str:
    """``nft`` in a namespace (``nft(ns, "-f", "-", stdin=script)`` loads a script)."""
    return run(["ip", "netns", "exec", ns, "nft", *args], stdin=stdin)


def sanity(b: Topology, d: Topology, *, op25b: bool = True) -> None:
    """Prove the rulesets are live: OP25B resets dyn4 -> mx:25 in b; everything else connects.

    ``op25b=False`` for a ruleset without OP25B (gateway m): its dyn4 and
    static4 connections must just connect.
    """
    with (
        Listener(b.hosts["mx"].ns, [MX], PORTS, hold=False),
        Listener(d.hosts["mx"].ns, [MX], PORTS, hold=False),
    ):
        checks = [
            (b, "dyn4", DYN4, 25, Outcome.RESET if op25b else Outcome.CONNECTED),
            (b, "dyn4", DYN4, 80, Outcome.CONNECTED),
            (b, "static4", STATIC4, 25, Outcome.CONNECTED),
            (d, "dyn4", DYN4, 80, Outcome.CONNECTED),
        ]
        for topo, host, src, port, wanted in checks:
            got = connect(topo.hosts[host].ns, MX, port, src=src, timeout=2.0)
            if got is not wanted:
                raise RuntimeError(f"{topo.prefix} {host}->mx:{port}: {got}, expected {wanted}")


def blocks_by_hand(m: Topology) -> None:
    """Prove gateway m's block check acts: dyn4 held there for a moment is dropped."""
    element = ("inet", "bench_minimal", "q_block_4", f"{{ {DYN4} }}")
    with Listener(m.hosts["mx"].ns, [MX], PORTS, hold=False):
        nft(m.gateway_ns, "add", "element", *element)
        try:
            got = connect(m.hosts["dyn4"].ns, MX, 80, src=DYN4, timeout=1.0)
        finally:
            nft(m.gateway_ns, "delete", "element", *element)
        if got is not Outcome.TIMEOUT:
            raise RuntimeError(f"m: a blocked dyn4 -> mx:80 {got}, expected a drop (timeout)")


def finite(values: list[float]) -> list[float]:
    return [v for v in values if v == v]  # nan != nan


def cpu_ratios(base: list[float], candidate: list[float]) -> list[float]:
    """Per round: baseline CPU per setup / candidate CPU per setup (rounds with both)."""
    return [b / c for b, c in zip(base, candidate, strict=True) if b == b and c == c and c > 0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["client", "server", "both"], help=argparse.SUPPRESS)
    parser.add_argument("--listen", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--pool-prefixes", type=int, default=5000)
    parser.add_argument("--profile", choices=["full", "rate"], default="full")
    parser.add_argument("--linear-rules", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=0.5, help="per condition per round")
    parser.add_argument(
        "--slices",
        type=int,
        default=5,
        help="interleaved slices per condition per round (of --seconds in total)",
    )
    parser.add_argument("--seed", type=int, default=1, help="of the per-round order shuffle")
    parser.add_argument(
        "--max-connections", type=int, default=500_000, help="per condition per round"
    )
    parser.add_argument("--arrangement", choices=["pinned", "procs", "threads"], default="pinned")
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()
    if args.slices < 1:
        parser.error("--slices: at least 1")
    if args.worker:
        return worker(args.worker, args.listen)
    install_signal_handlers()
    started = time.monotonic()
    print(
        f"# forwarding: {args.keys:,} keys, profile {args.profile}, arrangement {args.arrangement}"
    )
    print(f"machine: {machine()}")
    tag = run_id()
    with ExitStack() as stack:
        topo = {
            name: stack.enter_context(topology(f"{BENCH_BASE}-{tag}-{name}"))
            for name in ("a", "b", "d", "e", "f", "s", "m")
        }
        state = build_state(args.keys, pool_prefixes=args.pool_prefixes, profile_kind=args.profile)
        untracked = dataclasses.replace(
            state, settings=dataclasses.replace(state.settings, track_non_mail=False)
        )
        uncapped = dataclasses.replace(
            untracked,
            rate_limits=tuple(
                dataclasses.replace(p, concurrent=None, per_destination=None)
                for p in state.rate_limits
            ),
        )
        for name, variant in (("b", state), ("f", untracked), ("s", uncapped)):
            with Dataplane(topo[name].gateway_ns) as dataplane:
                loaded = dataplane.full_sync(variant, now=FIXED_NOW)
            print(f"{name}: full_sync of {args.keys:,} keys in {loaded.seconds:.2f} s")
        nft(topo["m"].gateway_ns, "-f", "-", stdin=minimal_script(state))
        del state, untracked, uncapped
        sanity(topo["f"], topo["d"])
        sanity(topo["s"], topo["d"])
        sanity(topo["m"], topo["d"], op25b=False)
        blocks_by_hand(topo["m"])
        tracked = run(["ip", "netns", "exec", topo["s"].gateway_ns, "cat", CONNTRACK_COUNT]).strip()
        if tracked != "0":
            raise RuntimeError(f"s tracked {tracked} connections: its table uses conntrack")
        start = time.perf_counter()
        nft(topo["d"].gateway_ns, "-f", "-", stdin=linear_chain_script(args.linear_rules))
        print(f"d: {args.linear_rules:,} rules loaded in {time.perf_counter() - start:.2f} s")
        nft(topo["e"].gateway_ns, "-f", "-", stdin=CT_ONLY_SCRIPT)
        sanity(topo["b"], topo["d"])

        mx = [topo[name].hosts["mx"].ns for name in topo]
        if args.arrangement == "threads":
            client = Worker("both", mx, None)
            stack.callback(client.close)
        else:
            pinned = args.arrangement == "pinned"
            server = Worker("server", mx, 1 if pinned else None)
            stack.callback(server.close)
            client = Worker("client", [], 0 if pinned else None)
            stack.callback(client.close)

        conditions = {
            "a80": (topo["a"], "dyn4", DYN4, 80),
            "b80": (topo["b"], "dyn4", DYN4, 80),
            "d80": (topo["d"], "dyn4", DYN4, 80),
            "e80": (topo["e"], "dyn4", DYN4, 80),
            "f80": (topo["f"], "dyn4", DYN4, 80),
            "f25": (topo["f"], "static4", STATIC4, 25),
            "s80": (topo["s"], "dyn4", DYN4, 80),
            "m80": (topo["m"], "dyn4", DYN4, 80),
            "s25": (topo["s"], "static4", STATIC4, 25),
            "a25": (topo["a"], "static4", STATIC4, 25),
            "c25": (topo["b"], "static4", STATIC4, 25),
            "e25": (topo["e"], "static4", STATIC4, 25),
        }
        # A short warm-up of each path (caches, conntrack tables, the workers).
        for t, host, src, port in conditions.values():
            client.measure(
                ns=t.hosts[host].ns,
                src=src,
                dst=MX,
                port=port,
                seconds=0.3,
                limit=args.max_connections,
            )
        rates: dict[str, list[float]] = {name: [] for name in conditions}
        failures: dict[str, int] = dict.fromkeys(conditions, 0)
        cpu_us: dict[str, list[float]] = {name: [] for name in conditions}
        order = list(conditions)
        shuffler = random.Random(args.seed)
        for rnd in range(args.rounds):
            if time.monotonic() - started > args.max_seconds:
                print(f"time budget reached after {rnd} rounds")
                break
            # A fresh random order for every pass: no condition always
            # follows the same neighbour.  Slices interleave the conditions
            # within the round, so a burst of other load on the machine
            # lands on all of them alike instead of on whichever one ran
            # then; the per-round ratios pair samples of the same seconds.
            totals = {
                name: dict.fromkeys(("ok", "failed", "seconds", "cpu"), 0.0) for name in order
            }
            for _ in range(args.slices):
                shuffler.shuffle(order)
                for name in order:
                    t, host, src, port = conditions[name]
                    answer = client.measure(
                        ns=t.hosts[host].ns,
                        src=src,
                        dst=MX,
                        port=port,
                        seconds=args.seconds / args.slices,
                        limit=args.max_connections,
                    )
                    for field, value in answer.items():
                        totals[name][field] += value
            for name, total in totals.items():
                ok = total["ok"]
                rates[name].append(ok / total["seconds"])
                # One entry per round (nan when nothing connected), so rounds pair up.
                cpu_us[name].append(total["cpu"] / ok * 1e6 if ok else float("nan"))
                failures[name] += int(total["failed"])
            print(
                "  round "
                + str(rnd + 1)
                + ": "
                + ", ".join(
                    f"{n} {rates[n][-1]:,.0f}/s" for n in conditions if len(rates[n]) > rnd
                ),
                flush=True,
            )

    def row(name: str, base: str, label: str, target: str) -> list[object]:
        values = rates[name]
        ratio = median(values) / median(rates[base])
        # Per-round ratios (same round, a few seconds apart) cancel slow
        # drifts of the background load; best-of compares the least
        # disturbed samples (other load only ever slows a sample down).
        paired = [v / b for v, b in zip(values, rates[base], strict=False)]
        return [
            label,
            f"{median(values):,.0f}",
            f"{min(values):,.0f}-{max(values):,.0f}",
            f"{ratio:.3f}",
            f"{median(paired):.3f} ({percentile(paired, 25):.2f}-{percentile(paired, 75):.2f})"
            if name != base
            else "-",
            f"{max(values) / max(rates[base]):.3f}",
            f"{median(finite(cpu_us[name])):.1f}",
            f"{median(finite(cpu_us[base])) / median(finite(cpu_us[name])):.3f}",
            target,
            failures[name],
        ]

    print_table(
        f"TCP connection setups/s through the gateway ({len(rates['a80'])} rounds x "
        f"{args.seconds:g} s in {args.slices} slices, medians; arrangement {args.arrangement})",
        [
            "condition",
            "setups/s",
            "min-max",
            "ratio",
            "per-round ratio: median (IQR)",
            "best/best",
            "client CPU us/setup",
            "CPU ratio",
            "target",
            "failed connects",
        ],
        [
            row("a80", "a80", "a: no table, dyn4 -> mx:80", "baseline"),
            row("b80", "a80", f"b: edgectl {args.keys:,} keys, dyn4 -> mx:80", "(reported)"),
            row("e80", "a80", "e: conntrack only (ct state rule), dyn4 -> mx:80", "-"),
            row("f80", "a80", "f: edgectl, track_non_mail = false, dyn4 -> mx:80", "(reported)"),
            row(
                "s80", "a80", "s: f without ct-count caps (no conntrack), dyn4 -> mx:80", ">= 0.95"
            ),
            row("m80", "a80", "m: s's non-mail checks by hand, dyn4 -> mx:80", "(reported)"),
            row("a25", "a25", "a: no table, static4 -> mx:25", "baseline"),
            row("c25", "a25", f"c: edgectl, static4 (profile {args.profile}) -> mx:25", ">= 0.85"),
            row("e25", "a25", "e: conntrack only, static4 -> mx:25", "-"),
            row("f25", "a25", "f: edgectl, track_non_mail = false, static4 -> mx:25", ">= 0.85"),
            row(
                "s25", "a25", "s: f without ct-count caps, static4 (rate meter) -> mx:25", ">= 0.85"
            ),
            row(
                "d80",
                "a80",
                f"d: {args.linear_rules:,} linear rules, dyn4 -> mx:80",
                "(0.08 reported)",
            ),
        ],
    )
    command = (
        f".venv/bin/python bench/forwarding.py --keys {args.keys} --rounds {args.rounds} "
        f"--seconds {args.seconds:g} --slices {args.slices} --profile {args.profile}"
    )
    clock = (
        "client thread CPU per TCP setup (incl. the softirq forwarding through the gateway), "
        "per-round ratio baseline/candidate"
    )
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nloadavg at the end: {' '.join(load)}")

    def emit_ratio(key: str, name: str, base: str, target: str, goal: float | None) -> None:
        ratios = cpu_ratios(cpu_us[base], cpu_us[name])
        if not ratios:
            print(f"{key}: no round with setups in both {name} and {base}")
            return
        value = median(ratios)
        rate = median(rates[name]) / median(rates[base])
        emit(
            Row(
                key=key,
                target=target,
                value=value,
                low=min(ratios),
                high=max(ratios),
                unit=f"x {base} (setups/s ratio {rate:.2f})",
                clock=clock,
                runs=len(ratios),
                met=None if goal is None else value >= goal,
                command=command,
            )
        )

    # With ct-count caps in a profile, mail must stay tracked, so the kernel
    # runs conntrack's and defrag's hooks for every packet in the namespace
    # (an untracked one leaves them early but still passes through them), and
    # the raw notrack chain is one more hook.  That price belongs to the caps,
    # not to edgectl's lookups: issue 10 item 8 makes a conntrack-enabled
    # gateway the baseline for capped profiles.  The figure against no table
    # stays in the table, reported (gateway s is the same ruleset without caps).
    emit_ratio(
        "forwarding_nonmail_untracked_capped",
        "f80",
        "a80",
        "non-mail setups, track_non_mail = false, caps on, vs no table (reported: "
        "the caps need conntrack's hooks)",
        None,
    )
    emit_ratio(
        "forwarding_nonmail_untracked_capped_vs_conntrack",
        "f80",
        "e80",
        "non-mail setups, track_non_mail = false, caps on >= 0.90x a conntrack-only gateway",
        0.90,
    )
    emit_ratio(
        "forwarding_nonmail_untracked_uncapped",
        "s80",
        "a80",
        "non-mail setups, track_non_mail = false, no ct-count caps >= 0.95x no table",
        0.95,
    )
    # The floor of s's behaviour for non-mail: a blocked subscriber's every
    # packet is checked (its floods and open flows too), so every forwarded
    # packet pays a hash lookup whoever wrote the ruleset.  These two rows
    # split s80's distance from a80 into that floor and edgectl's share.
    emit_ratio(
        "forwarding_nonmail_untracked_handwritten",
        "m80",
        "a80",
        "non-mail setups through the same checks written by hand (gateway m), no conntrack, "
        "vs no table (reported: the floor of a lookup on every packet)",
        None,
    )
    emit_ratio(
        "forwarding_nonmail_untracked_vs_handwritten",
        "s80",
        "m80",
        "non-mail setups, track_non_mail = false, no ct-count caps, vs the same checks written "
        "by hand (reported: what edgectl adds to that floor)",
        None,
    )
    emit_ratio(
        "forwarding_nonmail_tracked",
        "b80",
        "a80",
        "non-mail setups, tracked default vs no table (reported: pays conntrack)",
        None,
    )
    emit_ratio(
        "forwarding_nonmail_tracked_vs_conntrack",
        "b80",
        "e80",
        "non-mail setups, tracked default >= 0.95x a conntrack-only gateway",
        0.95,
    )
    emit_ratio(
        "forwarding_capped_vs_conntrack",
        "c25",
        "e25",
        f"mail from a capped static pool (profile {args.profile}) >= 0.90x a conntrack-only "
        "gateway",
        0.90,
    )
    emit_ratio(
        "forwarding_mail_uncapped",
        "s25",
        "a25",
        "mail from a rate-metered static pool, no conntrack >= 0.85x no table",
        0.85,
    )
    print(
        f"\npeak RSS of this process: {peak_rss_mib():.0f} MiB; "
        f"cpu affinity {sorted(os.sched_getaffinity(0))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
