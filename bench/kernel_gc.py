#!/usr/bin/env python3
"""The kernel's standing cost of a loaded table: set garbage collection.

Run as root: ``.venv/bin/python bench/kernel_gc.py [--keys 1000000] [--seconds 61]``.
Needs ``perf`` (Debian: linux-perf).

A hash set with ``flags timeout`` is walked element by element by a kernel
worker every gc-interval (default 1 s) to free expired elements.  That work
runs in a kworker, not in the agent, so the agent's own CPU figure never
shows it.  For each candidate this script loads the same state into a fresh
namespace (``ectl-bench-<hex>-gc-*``, deleted on exit), then samples every
CPU with ``perf record -e cpu-clock`` for ``--seconds`` and counts the
samples in the set GC functions (``nft_rhash_gc``, ``rhashtable_walk_*``):

* **hand-written**: ``handwritten_script()`` through ``nft -f``, the kernel
  default gc-interval, as an operator would write it;
* **edgectl**: ``Dataplane.full_sync`` of the state (``gc-interval 60s`` on
  the keyed sets).

The default window is 61 s so that the edgectl candidate's window holds at
least one collection.  Prints CPU cores used by set GC and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (
    BENCH_BASE,
    FIXED_NOW,
    build_state,
    handwritten_script,
    install_signal_handlers,
    machine,
    namespace,
    print_table,
    run,
    run_id,
    settle,
)
from _results import Row, emit

from edgectl.agent.apply import Dataplane
from edgectl.model import DesiredState

FREQUENCY = 999  # samples per second per CPU
GC_SYMBOLS = ("nft_rhash_gc", "rhashtable_walk_")


def gc_cores(seconds: float, workdir: Path) -> tuple[float, int]:
    """CPU cores spent in set GC over a window, and the window's total samples."""
    data = workdir / "perf.data"
    record = ["perf", "record", "-q", "-a", "-F", str(FREQUENCY), "-e", "cpu-clock"]
    run([*record, "-o", str(data), "--", "sleep", str(seconds)], timeout=seconds + 60)
    report = run(
        ["perf", "report", "-i", str(data), "--stdio", "--sort", "sym", "-F", "sample,sym"],
        timeout=120,
    )
    gc = total = 0
    for line in report.splitlines():
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        samples = int(fields[0])
        total += samples
        if any(fields[-1].startswith(symbol) for symbol in GC_SYMBOLS):
            gc += samples
    return gc / (FREQUENCY * seconds), total


def load_handwritten(ns: str, state: DesiredState) -> None:
    run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=handwritten_script(state))


def load_edgectl(ns: str, state: DesiredState) -> None:
    with Dataplane(ns) as dataplane:
        dataplane.full_sync(state, now=FIXED_NOW)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=61.0)
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        help="window of the hand-written candidate (default: --seconds); its sets are "
        "collected every second, so 10 s is plenty",
    )
    args = parser.parse_args()
    if shutil.which("perf") is None:
        print("perf is not installed (Debian: apt install linux-perf)", file=sys.stderr)
        return 2
    install_signal_handlers()
    print(f"# kernel set GC: {args.keys:,} keys, {args.seconds:g} s windows")
    print(f"machine: {machine()}")
    state = build_state(args.keys)
    rows = []
    cores: dict[str, float] = {}
    tag = run_id()
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-gc-") as root:
        for name, load in (("hand-written", load_handwritten), ("edgectl", load_edgectl)):
            with namespace(f"{BENCH_BASE}-{tag}-gc-{name[0]}") as ns:
                load(ns, state)
                settle(2.0)
                window = args.seconds
                if name == "hand-written" and args.baseline_seconds:
                    window = args.baseline_seconds
                cores[name], total = gc_cores(window, Path(root))
            settle(2.0)
            rows.append(
                [
                    name,
                    f"{cores[name] * 100:.2f} %",
                    f"{total:,}",
                    f"{cores[name] / cores['hand-written']:.4f}" if cores["hand-written"] else "-",
                ]
            )
    print_table(
        "CPU spent by the kernel collecting timeout sets (one core = 100 %)",
        ["candidate", "set GC, share of one core", "samples (all CPUs)", "vs hand-written"],
        rows,
    )
    ratio = cores["edgectl"] / cores["hand-written"] if cores["hand-written"] else float("nan")
    emit(
        Row(
            key="kernel_gc",
            target="kernel set GC of a loaded table, edgectl vs hand-written (reported)",
            value=cores["edgectl"] * 100,
            low=cores["edgectl"] * 100,
            high=cores["edgectl"] * 100,
            unit=(
                f"% of a core at {args.keys:,} keys (hand-written "
                f"{cores['hand-written'] * 100:.2f} %, ratio {ratio:.3f})"
            ),
            clock=f"perf cpu-clock samples in the set GC over one {args.seconds:g} s window",
            runs=1,
            met=None,
            command=f".venv/bin/python bench/kernel_gc.py --keys {args.keys} "
            f"--seconds {args.seconds:g}"
            + (f" --baseline-seconds {args.baseline_seconds:g}" if args.baseline_seconds else ""),
        )
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.TimeoutExpired as error:
        sys.exit(f"timed out: {error}")
