#!/usr/bin/env python3
"""Full sync of a large gateway state against a raw ``nft -f`` of the same elements.

Run as root: ``.venv/bin/python bench/dataplane_sync.py [--keys 1000000] [--reps 3]``.

The state: 5,000 pool /24s in 100.64.0.0/10 (two dynamic pools, one static
pool with a rate-limit profile; two IPv6 /40 pools delegating /56s) and
``--keys`` quarantined or exempted subscriber keys (95 % IPv4 /32, 5 % IPv6
/56; 25 % with an expiry, i.e. a kernel timeout).  Candidates, each loaded
into a *fresh* namespace ``ectl-bench-<hex>-sync-<n>`` (deleted right after),
interleaved and rotated per repetition:

* ``raw nft -f``: ``ip netns exec NS nft -f FILE`` of a hand-written script
  holding the same elements (bench/_common.py ``handwritten_script``) - the
  baseline;
* ``edgectl full_sync``: ``Dataplane(Nft(NS)).full_sync(state)`` (render in
  Python + one libnftables transaction, in this process);
* ``nft -f edgectl script``: the script edgectl renders, loaded by the nft
  CLI - the nft/kernel share of full_sync without Python.

Also timed: building the DesiredState, ``render_full`` alone.  Peak RSS of
this process (ru_maxrss) and of the largest nft child are printed.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (
    BENCH_BASE,
    CMD_TIMEOUT_S,
    FIXED_NOW,
    build_state,
    current_rss_mib,
    fmt_s,
    handwritten_script,
    install_signal_handlers,
    machine,
    median,
    namespace,
    peak_rss_mib,
    print_table,
    run_id,
    settle,
)
from _results import Row, emit

from edgectl.agent.apply import Dataplane
from edgectl.agent.render import render_full
from edgectl.model.policy import DesiredState

RAW = "raw nft -f (hand-written)"
EDGECTL = "edgectl full_sync"
CLI = "nft -f edgectl script"


def _mib(values: list[float]) -> list[object]:
    if not values:
        return ["-", "-"]
    return [f"{median(values):.0f}", f"{min(values):.0f}-{max(values):.0f}"]


def _nft_file(ns: str, path: Path, rss: list[float]) -> tuple[float, float]:
    """``ip netns exec NS nft -f FILE``: (wall, CPU) seconds; its peak RSS into ``rss``.

    Run under /usr/bin/time, which reports its child's own peak RSS and CPU
    time (ru_maxrss of RUSAGE_CHILDREN would count this big process's
    memory: a forked child inherits its high-water mark until it execs).
    The kernel's commit work runs in nft's netlink sendmsg, so it is in
    nft's system time.
    """
    start = time.perf_counter()
    done = subprocess.run(
        [
            "/usr/bin/time",
            "-f",
            "maxrss_kib=%M cpu=%U+%S",
            *("ip", "netns", "exec", ns, "nft", "-f", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT_S,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"nft -f {path.name} failed: {done.stderr.strip()[:500]}")
    report = done.stderr.strip().rsplit("maxrss_kib=", 1)[1]
    kib, cpu = report.split(" cpu=")
    rss.append(int(kib) / 1024)
    user, system = cpu.split("+")
    return seconds, float(user) + float(system)


def _agent(
    ns: str, state_args: list[str], rss: list[float], build: list[float]
) -> tuple[float, float]:
    """A fresh process that builds the state and full-syncs it, like an agent at start-up."""
    done = subprocess.run(
        [sys.executable, __file__, "--agent", ns, *state_args],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"agent process failed: {done.stderr.strip()[-1500:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    rss.append(answer["maxrss_mib"])
    build.append(answer["build"])
    return float(answer["sync"]), float(answer["sync_cpu"])


def agent_main(ns: str, args: argparse.Namespace) -> int:
    start = time.perf_counter()
    state = _build(args)
    built = time.perf_counter() - start
    rss_state = current_rss_mib()
    before = resource.getrusage(resource.RUSAGE_SELF)
    with Dataplane(ns) as dataplane:
        result = dataplane.full_sync(state, now=FIXED_NOW)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(
        json.dumps(
            {
                "build": built,
                "sync": result.seconds,
                "sync_cpu": cpu,
                "rss_state_mib": rss_state,
                "maxrss_mib": peak_rss_mib(),
            }
        )
    )
    return 0


def _build(args: argparse.Namespace) -> DesiredState:
    return build_state(
        args.keys,
        pool_prefixes=args.pool_prefixes,
        v6_fraction=args.v6_fraction,
        expiring_fraction=args.expiring_fraction,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--pool-prefixes", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each candidate")
    parser.add_argument("--v6-fraction", type=float, default=0.05)
    parser.add_argument("--expiring-fraction", type=float, default=0.25)
    parser.add_argument(
        "--max-seconds", type=float, default=1200, help="stop starting new repetitions after this"
    )
    parser.add_argument("--no-cli", action="store_true", help="skip the nft -f edgectl script run")
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    args = parser.parse_args()
    state_args = [
        f"--keys={args.keys}",
        f"--pool-prefixes={args.pool_prefixes}",
        f"--v6-fraction={args.v6_fraction}",
        f"--expiring-fraction={args.expiring_fraction}",
    ]
    if args.agent:
        return agent_main(args.agent, args)
    install_signal_handlers()
    started = time.monotonic()
    print(f"# dataplane_sync: {args.keys:,} keys, {args.pool_prefixes:,} pool /24s")
    print(f"machine: {machine()}")
    render_src = Path(__file__).resolve().parent.parent / "edgectl/agent/render.py"
    print(f"render.py sha256 {hashlib.sha256(render_src.read_bytes()).hexdigest()[:12]}")

    start = time.perf_counter()
    state = _build(args)
    build_times = [time.perf_counter() - start]
    rss_state = current_rss_mib()

    render_times = []
    render_cpu = []
    script = ""
    for _ in range(args.reps):
        script = ""
        start, start_cpu = time.perf_counter(), time.process_time()
        script = str(render_full(state, FIXED_NOW).transaction)
        render_times.append(time.perf_counter() - start)
        render_cpu.append(time.process_time() - start_cpu)
    rss_after_render = peak_rss_mib()

    tag = run_id()
    times: dict[str, list[float]] = {RAW: [], EDGECTL: [], CLI: []}
    cpu_times: dict[str, list[float]] = {RAW: [], EDGECTL: [], CLI: []}
    with tempfile.TemporaryDirectory(prefix="ectl-bench-") as tmp:
        raw_file = Path(tmp, "handwritten.nft")
        raw_file.write_text(handwritten_script(state))
        cli_file = Path(tmp, "edgectl.nft")
        cli_file.write_text(script)
        print(
            f"script sizes: hand-written {raw_file.stat().st_size / 1e6:.1f} MB, "
            f"edgectl {len(script) / 1e6:.1f} MB"
        )
        script = ""
        del state  # the agent processes build their own
        gc.collect()
        rss: dict[str, list[float]] = {RAW: [], EDGECTL: [], CLI: []}
        agent_builds: list[float] = []
        candidates: dict[str, Callable[[str], tuple[float, float]]] = {
            RAW: lambda ns: _nft_file(ns, raw_file, rss[RAW]),
            EDGECTL: lambda ns: _agent(ns, state_args, rss[EDGECTL], agent_builds),
        }
        if not args.no_cli:
            candidates[CLI] = lambda ns: _nft_file(ns, cli_file, rss[CLI])
        order = list(candidates)
        counter = 0
        for rep in range(args.reps):
            if time.monotonic() - started > args.max_seconds:
                print(f"time budget reached after {rep} repetitions")
                break
            for name in order[rep % len(order) :] + order[: rep % len(order)]:
                counter += 1
                with namespace(f"{BENCH_BASE}-{tag}-sync-{counter}") as ns:
                    seconds, cpu = candidates[name](ns)
                times[name].append(seconds)
                cpu_times[name].append(cpu)
                print(f"  rep {rep + 1} {name}: {seconds:.3f} s (CPU {cpu:.3f} s)", flush=True)
                settle(2.0)

    build_times += agent_builds
    cpu_base = median(cpu_times[RAW]) if cpu_times[RAW] else float("nan")
    base = median(times[RAW]) if times[RAW] else float("nan")
    rows: list[list[object]] = []
    for name, values in times.items():
        if values:
            spread = f"{min(values):.3f}-{max(values):.3f}"
            cpu = median(cpu_times[name])
            rows.append(
                [
                    name,
                    len(values),
                    fmt_s(median(values)),
                    spread,
                    f"{median(values) / base:.2f}x",
                    fmt_s(cpu),
                    f"{cpu / cpu_base:.2f}x",
                ]
            )
    rows.append(
        [
            "render_full alone (Python)",
            len(render_times),
            fmt_s(median(render_times)),
            f"{min(render_times):.3f}-{max(render_times):.3f}",
            f"{median(render_times) / base:.2f}x",
            fmt_s(median(render_cpu)),
            f"{median(render_cpu) / cpu_base:.2f}x",
        ]
    )
    rows.append(
        [
            "build DesiredState (Python)",
            len(build_times),
            fmt_s(median(build_times)),
            f"{min(build_times):.3f}-{max(build_times):.3f}",
            f"{median(build_times) / base:.2f}x",
            "-",
            "-",
        ]
    )
    print_table(
        f"Full sync, {args.keys:,} keys + {args.pool_prefixes:,} pool prefixes "
        "(fresh namespace each; target edgectl <= 1.25x raw)",
        ["candidate", "n", "median", "min-max (s)", "vs raw nft -f", "CPU median", "CPU vs raw"],
        rows,
    )
    _emit_ratios(args, times, cpu_times)
    print_table(
        "Peak RSS per process (ru_maxrss; median over repetitions)",
        ["process", "MiB", "min-max"],
        [
            ["edgectl agent process (build state + full_sync)", *_mib(rss[EDGECTL])],
            [f"nft CLI, {RAW}", *_mib(rss[RAW])],
            [f"nft CLI, {CLI}", *_mib(rss[CLI])],
            ["this process after building the state (current RSS)", f"{rss_state:.0f}", "-"],
            ["this process peak incl. render_full alone", f"{rss_after_render:.0f}", "-"],
        ],
    )
    return 0


def _emit_ratios(
    args: argparse.Namespace, times: dict[str, list[float]], cpu_times: dict[str, list[float]]
) -> None:
    """Per-repetition ratios (edgectl and raw ran in the same repetition, interleaved)."""
    pairs = min(len(times[RAW]), len(times[EDGECTL]))
    if not pairs:
        return
    size = f"{args.keys // 1000}k" if args.keys < 1_000_000 else f"{args.keys // 1_000_000}m"
    command = (
        f".venv/bin/python bench/dataplane_sync.py --keys {args.keys} "
        f"--pool-prefixes {args.pool_prefixes} --reps {args.reps} --no-cli"
    )
    for suffix, label, series in (("", "wall", times), ("_cpu", "CPU", cpu_times)):
        ratios = [series[EDGECTL][i] / series[RAW][i] for i in range(pairs)]
        value = median(ratios)
        emit(
            Row(
                key=f"full_sync_{size}{suffix}",
                target=f"full sync {args.keys:,} keys + {args.pool_prefixes:,} pools "
                f"<= 1.25x raw nft -f ({label})",
                value=value,
                low=min(ratios),
                high=max(ratios),
                unit=f"x raw nft -f ({label})",
                clock="fresh process: build state, render, one libnftables commit; "
                "raw: nft -f of hand-written sets",
                runs=pairs,
                met=value <= 1.25,
                command=command,
            )
        )


if __name__ == "__main__":
    sys.exit(main())
