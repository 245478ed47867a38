#!/usr/bin/env python3
"""``edgectl apply -f`` of a large policy, the whole command, against ``nft -f`` of its elements.

Run as root: ``.venv/bin/python bench/cli_apply.py [--keys 200000] [--reps 3]``.

The policy: bench/_common.py ``build_state`` (5,000 pool /24s, ``--keys``
keys), written as a JSON policy file; its exemptions outside dynamic pools
(which lint refuses: OP25B does not apply there) become smtp quarantines,
so the file is one an operator could apply.  ``build_state`` dates its
expiries a week after FIXED_NOW; the policy file's are moved by the time
since then, so that edgectl, which leaves expired entries out, loads every
key the raw script loads, with the same timeouts.  Candidates, interleaved and
rotated per repetition, each into a fresh namespace
``ectl-bench-<hex>-cli-<n>`` with a fresh state directory:

* ``raw nft -f``: ``ip netns exec NS nft -f FILE`` of the hand-written
  script of the same elements (bench/_common.py ``handwritten_script``);
* ``edgectl apply -f``: the installed ``edgectl`` command in a new process
  (imports, loading and linting the file, plan, full sync, saving the
  state file): wall clock and the process's CPU.

The row ``cli_apply_<n>k`` is the median over repetitions of the
per-repetition ratio edgectl / raw (wall); CPU ratios are printed too.
"""

from __future__ import annotations

import argparse
import compileall
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (
    BENCH_BASE,
    CMD_TIMEOUT_S,
    FIXED_NOW,
    build_state,
    handwritten_script,
    install_signal_handlers,
    machine,
    namespace,
    print_table,
    run_id,
    settle,
)
from _results import Row, emit

import edgectl
from edgectl.model.lint import lint
from edgectl.model.policy import DesiredState, Quarantine, QuarantineMode
from edgectl.model.prefix import Prefix
from edgectl.model.serial import state_to_data

EDGECTL = str(Path(sys.executable).with_name("edgectl"))


def _timed(command: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``command`` under /usr/bin/time."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "cpu=%U+%S", *command],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT_S,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {done.stderr.strip()[-800:]}")
    user, system = done.stderr.strip().rsplit("cpu=", 1)[1].split("+")
    return seconds, float(user) + float(system)


def _applicable(state: DesiredState) -> DesiredState:
    """The bench state with lint's refusals turned into quarantines."""
    refused = {
        Prefix.parse(problem.path.split("[", 1)[1].split("]", 1)[0])
        for problem in lint(state)
        if problem.path.startswith("exemptions[")
    }
    quarantines = dict(state.quarantines)
    for key in refused:
        quarantines[key] = Quarantine(
            key, QuarantineMode.SMTP, expires=state.exemptions[key].expires
        )
    exemptions = {k: e for k, e in state.exemptions.items() if k not in refused}
    fixed = replace(state, quarantines=quarantines, exemptions=exemptions)
    left = lint(fixed)
    if left:
        raise RuntimeError(f"bench policy still refused by lint: {left[0]}")
    return fixed


def _dated_now(state: DesiredState) -> DesiredState:
    """``state`` with every expiry moved by the time from FIXED_NOW to now.

    The raw script's timeouts count from FIXED_NOW; without the move, every
    expiry would lie in the past on a machine whose clock is past it, and
    edgectl would rightly load a quarter fewer keys than the baseline.
    """
    shift = datetime.now(UTC).replace(microsecond=0) - FIXED_NOW
    return replace(
        state,
        quarantines={
            k: q if q.expires is None else replace(q, expires=q.expires + shift)
            for k, q in state.quarantines.items()
        },
        exemptions={
            k: e if e.expires is None else replace(e, expires=e.expires + shift)
            for k, e in state.exemptions.items()
        },
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    install_signal_handlers()
    print(f"# cli_apply: {args.keys:,} keys, 5,000 pool /24s")
    print(f"machine: {machine()}")
    state = _applicable(build_state(args.keys))
    # The command as installed: pip compiles the package's bytecode, an
    # editable checkout under PYTHONDONTWRITEBYTECODE never does, and every
    # run would then time compiling the modules changed since the last
    # compile, not edgectl.
    compileall.compile_dir(Path(edgectl.__file__).parent, quiet=1)
    tag = run_id()
    times: dict[str, list[float]] = {"raw": [], "edgectl": []}
    cpu: dict[str, list[float]] = {"raw": [], "edgectl": []}
    with tempfile.TemporaryDirectory(prefix="ectl-bench-") as tmp:
        policy = Path(tmp, "policy.json")
        policy.write_text(json.dumps(state_to_data(_dated_now(state))))
        raw = Path(tmp, "handwritten.nft")
        raw.write_text(handwritten_script(state))
        print(
            f"policy {policy.stat().st_size / 1e6:.1f} MB, script {raw.stat().st_size / 1e6:.1f} MB"
        )
        counter = 0
        for rep in range(args.reps):
            order = ["raw", "edgectl"] if rep % 2 == 0 else ["edgectl", "raw"]
            for name in order:
                counter += 1
                with namespace(f"{BENCH_BASE}-{tag}-cli-{counter}") as ns:
                    if name == "raw":
                        command = ["ip", "netns", "exec", ns, "nft", "-f", str(raw)]
                    else:
                        state_dir = Path(tmp, f"state-{counter}")
                        command = [EDGECTL, "apply", "-f", str(policy), "--netns", ns]
                        command += ["--state-dir", str(state_dir)]
                    seconds, used = _timed(command)
                times[name].append(seconds)
                cpu[name].append(used)
                print(f"  rep {rep + 1} {name}: {seconds:.3f} s (CPU {used:.3f} s)", flush=True)
                settle(1.0)
    wall_ratios = [e / r for e, r in zip(times["edgectl"], times["raw"], strict=True)]
    cpu_ratios = [e / r for e, r in zip(cpu["edgectl"], cpu["raw"], strict=True)]
    print_table(
        f"edgectl apply -f of {args.keys:,} keys vs raw nft -f (per-repetition ratios)",
        ["", "n", "median", "min-max"],
        [
            [
                "wall ratio",
                len(wall_ratios),
                f"{statistics.median(wall_ratios):.2f}x",
                f"{min(wall_ratios):.2f}-{max(wall_ratios):.2f}",
            ],
            [
                "CPU ratio",
                len(cpu_ratios),
                f"{statistics.median(cpu_ratios):.2f}x",
                f"{min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}",
            ],
            [
                "edgectl wall (s)",
                len(times["edgectl"]),
                f"{statistics.median(times['edgectl']):.2f}",
                "-",
            ],
            ["raw wall (s)", len(times["raw"]), f"{statistics.median(times['raw']):.2f}", "-"],
        ],
    )
    value = statistics.median(wall_ratios)
    emit(
        Row(
            key=f"cli_apply_{args.keys // 1000}k",
            target=f"edgectl apply -f of a {args.keys:,}-key policy <= 1.5x nft -f of its elements",
            value=value,
            low=min(wall_ratios),
            high=max(wall_ratios),
            unit="x raw nft -f (wall)",
            clock="whole command: process start to exit (load, lint, plan, full sync, save)",
            runs=len(wall_ratios),
            met=value <= 1.5,
            command=f".venv/bin/python bench/cli_apply.py --keys {args.keys} --reps {args.reps}",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
