#!/usr/bin/env python3
"""Re-run every headline benchmark (reduced) and write BENCHMARKS.md's summary table.

Run as root from the repository root::

    .venv/bin/python bench/summary.py                 # all, then rewrite BENCHMARKS.md
    .venv/bin/python bench/summary.py --dry-run       # all, print the table only
    .venv/bin/python bench/summary.py --only forwarding.py --only agent_propagation.py
    .venv/bin/python bench/summary.py --full          # the sizes the targets name

``HEADLINES`` below is the one list of what is measured: each script with
its reduced arguments, the row keys it must print (``BENCH-RESULT`` lines,
bench/_results.py) and its time budget.  The budgets add up to at most
``TOTAL_BUDGET_S`` (15 minutes; ``--full``, the sizes the targets name:
``FULL_BUDGET_S``), so a run is bounded however slow the machine is: a
script that overruns its budget is stopped (SIGTERM to its process group,
so its ``finally`` deletes its namespaces).

Every figure in the written table comes from this run.  A row whose script
is missing, failed, timed out or did not print that key is written as
"not measured" with the reason, never dropped and never filled from an
earlier run.  The table sits between ``BEGIN`` and ``END`` marker comments;
everything else in the file is left as it is.  The table carries the
commit (``-dirty`` when the tree had uncommitted changes to tracked files),
the date, the load average before and after, and the machine.

Exit status: 0 when every row is met or reported, 1 otherwise.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import Row, parse

BEGIN = "<!-- bench-summary:begin (written by bench/summary.py; do not edit by hand) -->"
END = "<!-- bench-summary:end -->"
# ``--full`` writes its own section: the reduced table and the full-size one
# are each from one run, never mixed.
FULL_BEGIN = "<!-- bench-summary-full:begin (written by bench/summary.py --full) -->"
FULL_END = "<!-- bench-summary-full:end -->"
TOTAL_BUDGET_S = 900.0
FULL_BUDGET_S = 7300.0
STOP_GRACE_S = 60.0  # after SIGTERM: time for a script's finally to delete its namespaces
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Headline:
    """One headline script: how to run it reduced and full size, and the rows it owes."""

    script: str  # file name under bench/
    args: tuple[str, ...]  # the reduced form
    rows: tuple[tuple[str, str], ...]  # (key, target) the reduced form must print
    budget_s: float  # stopped after this long
    # The full-size form (``--full``): the figures an issue's targets name.
    # None: the reduced form is already the full one.
    full_args: tuple[str, ...] | None = None
    full_rows: tuple[tuple[str, str], ...] = ()
    full_budget_s: float = 0.0

    def sized(self, full: bool) -> Headline:
        """The form to run: itself, or its full-size form as a plain Headline."""
        if not full or self.full_args is None:
            return self
        return Headline(self.script, self.full_args, self.full_rows, self.full_budget_s)

    def command(self) -> str:
        return " ".join([".venv/bin/python", f"bench/{self.script}", *self.args])


def _steady_rows(size: str, keys: str) -> tuple[tuple[str, str], ...]:
    return (
        (f"agent_rss_{size}", f"agent RSS at {keys} keys <= 400 MiB"),
        (f"cold_start_{size}", f"cold start at {keys} <= 2x raw nft -f of the same keys"),
        (f"restart_from_disk_{size}", f"restart from disk at {keys} <= 2x raw nft -f"),
        (f"drift_repair_{size}", f"drift repair after flush ruleset at {keys} <= 1.5x raw nft -f"),
        ("drift_structure_first", "after a flush: structure, pools and limits back <= 1 s"),
    )


# Reduced forms keep a whole run within TOTAL_BUDGET_S; their row keys carry
# the size they ran at (full_sync_100k), so a reduced figure is never read
# as the million-key one.  ``--full`` runs the sizes the targets name.
HEADLINES: tuple[Headline, ...] = (
    Headline(
        "dataplane_sync.py",
        ("--keys", "100000", "--reps", "3", "--no-cli"),
        (
            ("full_sync_100k", "full sync, 100k keys + 5k pools <= 1.25x raw nft -f (wall)"),
            ("full_sync_100k_cpu", "full sync, 100k keys + 5k pools <= 1.25x raw nft -f (CPU)"),
        ),
        25,
        ("--keys", "1000000", "--reps", "3", "--no-cli"),
        (
            ("full_sync_1m", "full sync, 1M keys + 5k pools <= 1.25x raw nft -f (wall)"),
            ("full_sync_1m_cpu", "full sync, 1M keys + 5k pools <= 1.25x raw nft -f (CPU)"),
        ),
        600,
    ),
    Headline(
        "agent_delta_path.py",
        ("--sizes", "10000,100000", "--deltas", "100"),
        (("delta_path_100k", "agent delta path (answer in hand -> kernel commit) <= 2 ms"),),
        20,
        ("--sizes", "10000,100000,1000000", "--deltas", "200"),
        (("delta_path_1m", "agent delta path (answer in hand -> kernel commit) <= 2 ms at 1M"),),
        400,
    ),
    Headline(
        "agent_steady.py",
        ("--keys", "50000", "--reps", "3", "--seconds", "3"),
        _steady_rows("50k", "50k"),
        45,
        ("--keys", "1000000", "--reps", "3", "--seconds", "20"),
        _steady_rows("1m", "1M"),
        1200,
    ),
    # At the size the target names: the whole command takes ~15 s there.  A
    # smaller policy would measure mostly the interpreter's start (~0.1 s of
    # a 50k policy's ~0.35 s, against nft's ~0.2 s), not loading and saving.
    Headline(
        "cli_apply.py",
        ("--keys", "200000", "--reps", "3"),
        (("cli_apply_200k", "edgectl apply -f, 200k keys, whole command <= 1.5x nft -f"),),
        40,
    ),
    Headline(
        "agent_propagation.py",
        ("--extra", "50", "--quarantines", "50", "--held", "100000"),
        (("propagation_p99", "propagation p99 < 250 ms, 2 + 50 agents, 100k keys held"),),
        110,
    ),
    Headline(
        "block_cutoff.py",
        ("--rounds", "3"),
        (("block_cutoff", "a block quarantine cuts an established flow"),),
        25,
        ("--rounds", "5"),
        (("block_cutoff", "a block quarantine cuts an established flow"),),
        120,
    ),
    Headline(
        "controller_scaling.py",
        ("--held", "30000", "--baseline", "1000", "--rounds", "3", "--requests", "100"),
        (
            ("quarantine_create_p99_scaling", "quarantine create p99, 30k held <= 1.5x 1k held"),
            ("session_upsert_p99_scaling", "session upsert p99, 30k held <= 1.5x 1k held"),
        ),
        40,
        ("--held", "100000", "--baseline", "1000", "--quick"),
        (
            ("quarantine_create_p99_scaling", "quarantine create p99, 100k held <= 1.5x 1k held"),
            ("session_upsert_p99_scaling", "session upsert p99, 100k held <= 1.5x 1k held"),
        ),
        400,
    ),
    Headline(
        "propagation_one_gateway.py",
        ("--held", "50000", "--baseline", "5000", "--rounds", "3", "--requests", "30"),
        (("api_to_kernel_scaling", "API call -> key in kernel, 50k held <= 1.5x 5k held"),),
        45,
        ("--held", "200000", "--baseline", "10000", "--quick"),
        (("api_to_kernel_scaling", "API call -> key in kernel, 200k held <= 1.5x 10k held"),),
        500,
    ),
    Headline(
        "forwarding.py",
        # 16 rounds: with 8, a row's median moved by 0.04-0.10 between runs
        # on one commit (3 Dec), more than some rows' margin to their target.
        ("--keys", "100000", "--rounds", "16"),
        (
            (
                "forwarding_nonmail_untracked_capped",
                "non-mail, track_non_mail = false, caps on, vs no table (reported)",
            ),
            (
                "forwarding_nonmail_untracked_capped_vs_conntrack",
                "non-mail, track_non_mail = false, caps on >= 0.90x a conntrack-only gateway",
            ),
            (
                "forwarding_nonmail_untracked_uncapped",
                "non-mail, track_non_mail = false, no ct-count caps >= 0.95x no table",
            ),
            (
                "forwarding_nonmail_untracked_handwritten",
                "non-mail through the same checks written by hand, vs no table (reported)",
            ),
            (
                "forwarding_nonmail_untracked_vs_handwritten",
                "non-mail, track_non_mail = false, no caps, vs the same checks by hand (reported)",
            ),
            ("forwarding_nonmail_tracked", "non-mail, tracked default vs no table (reported)"),
            (
                "forwarding_nonmail_tracked_vs_conntrack",
                "non-mail, tracked default >= 0.95x a conntrack-only gateway",
            ),
            (
                "forwarding_capped_vs_conntrack",
                "mail from a capped static pool >= 0.90x a conntrack-only gateway",
            ),
            ("forwarding_mail_uncapped", "mail from a rate-metered static pool >= 0.85x no table"),
        ),
        120,
    ),
    Headline(
        "readback.py",
        ("--reduced", "--repeat", "3"),
        (("readback_structure", "read-back of a 1M-element table without listing it"),),
        10,
    ),
    Headline(
        "kernel_gc.py",
        ("--keys", "50000", "--seconds", "61", "--baseline-seconds", "5"),
        (("kernel_gc", "kernel set GC cost of edgectl's table vs hand-written"),),
        90,
    ),
    Headline(
        "controller_snapshot.py",
        ("--quarantines", "100000", "--rounds", "3"),
        (("snapshot_100k", "snapshot, 100k quarantines < 2 s, < 300 MB"),),
        30,
    ),
    Headline(
        "controller_delta.py",
        ("--sizes", "1000", "100000", "--rounds", "11"),
        (("delta_cost_flat", "delta cost at 100k held <= 1.5x at 1k held"),),
        35,
    ),
    Headline(
        "session_history.py",
        # --reduced's sizes with one storm (the storm is reported, not a target).
        ("--rows", "1000000", "--rounds", "5", "--storms", "1"),
        (
            (
                "session_history_at_lookup_p99_1m",
                "'who held X at T' over 1,000,000 intervals: p99 < 5 ms",
            ),
            ("session_history_at_lookup_ratio_1m", "at lookup p99, 1M / 100k intervals"),
        ),
        50,
        (),
        (
            (
                "session_history_at_lookup_p99_10m",
                "'who held X at T' over 10,000,000 intervals: p99 < 5 ms",
            ),
            ("session_history_at_lookup_ratio_10m", "at lookup p99, 10M / 100k intervals"),
        ),
        800,
    ),
    Headline(
        "radius_feed.py",
        ("--reduced", "--runs", "3"),
        (
            (
                "radius_sustained_20k",
                ">= 10,000 accounting packets/s into SQLite from 20 NAS, none lost (20k Starts)",
            ),
            ("radius_storm_10k", "10,000 Acct-Starts at once: time until all stored (reported)"),
        ),
        35,
        (),
        (
            (
                "radius_sustained_100k",
                ">= 10,000 accounting packets/s into SQLite from 20 NAS, none lost (100k Starts)",
            ),
            ("radius_storm_50k", "50,000 Acct-Starts at once: time until all stored (reported)"),
        ),
        300,
    ),
    Headline(
        "radius_quarantine.py",
        ("--reduced",),
        (
            (
                "radius_login_refused_p99_10k",
                "Acct-Start of a quarantined account -> refused on the gateway p99 < 300 ms",
            ),
        ),
        30,
        (),
        (
            (
                "radius_login_refused_p99_100k",
                "Acct-Start of a quarantined account -> refused on the gateway p99 < 300 ms",
            ),
        ),
        240,
    ),
    Headline(
        "console_pages.py",
        ("--reduced",),
        (
            (
                "console_pages_reduced",
                "every console page < 300 ms (10k quarantines, 100k audit, 1k offenders)",
            ),
        ),
        30,
        (),
        (
            (
                "console_pages",
                "every console page < 300 ms (100k quarantines, 1M audit entries, 10k offenders)",
            ),
        ),
        300,
    ),
    Headline(
        "reports_ingest.py",
        ("--reduced",),
        (
            ("reports_ingest_10k", "10,000 reports in one request, attributed: < 5 s (SQLite)"),
            ("escalation_replay_events_200k", "replay of 200,000 offender events < 60 s"),
        ),
        35,
        (),
        (
            ("reports_ingest_10k", "10,000 reports in one request, attributed: < 5 s (SQLite)"),
            ("escalation_replay_events_1m", "replay of a month of 1M offender events < 60 s"),
        ),
        600,
    ),
    Headline(
        "fleet.py",
        ("--agents", "50,300", "--rounds", "5", "--wakeups", "20"),
        (
            (
                "fleet_propagation_p99",
                "propagation to all 300 simulated + 2 real agents p99 <= 1 s",
            ),
            ("fleet_real_agents_p99", "propagation to the 2 real agents (own kernels) p99 <= 1 s"),
            ("fleet_cross_process_wakeup_p99", "cross-process wake-up extra p99 <= 50 ms"),
            ("fleet_desired_queries_growth", "desired-state SQL per change, 300 vs 50 agents"),
            ("fleet_memory_per_parked_agent", "controller memory per parked agent"),
        ),
        50,
        ("--agents", "100,1000", "--rounds", "7", "--wakeups", "30"),
        (
            (
                "fleet_propagation_p99",
                "propagation to all 1,000 simulated + 2 real agents p99 <= 1 s",
            ),
            ("fleet_real_agents_p99", "propagation to the 2 real agents (own kernels) p99 <= 1 s"),
            ("fleet_cross_process_wakeup_p99", "cross-process wake-up extra p99 <= 50 ms"),
            ("fleet_desired_queries_growth", "desired-state SQL per change, 1,000 vs 100 agents"),
            ("fleet_memory_per_parked_agent", "controller memory per parked agent"),
        ),
        700,
    ),
    Headline(
        "portal_notices.py",
        ("--reduced",),
        (
            ("portal_notices_rate", "the notice portal answers 500 notices/s"),
            ("portal_notices_p99", "notice p99 < 100 ms at 500/s"),
        ),
        30,
        (),
        (
            ("portal_notices_rate", "the notice portal answers 500 notices/s"),
            ("portal_notices_p99", "notice p99 < 100 ms at 500/s"),
        ),
        200,
    ),
)


# -- running -----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one script's run gave: its rows, or why it gave none."""

    headline: Headline
    rows: tuple[Row, ...]
    problem: str | None  # None: ran to the end with exit status 0
    seconds: float
    log: Path | None


def run_headline(headline: Headline, budget_s: float, logdir: Path) -> Outcome:
    script = REPO / "bench" / headline.script
    if not script.exists():
        return Outcome(headline, (), "script not in this commit", 0.0, None)
    if budget_s <= 0:
        return Outcome(headline, (), "total time budget spent before it ran", 0.0, None)
    log = logdir / f"{script.stem}.log"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), *headline.args],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped together
        )
        problem = None
        try:
            status = proc.wait(timeout=budget_s)
            if status != 0:
                problem = f"exit status {status}"
        except subprocess.TimeoutExpired:
            problem = f"stopped after its {budget_s:.0f} s budget"
            stop(proc)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): the script runs in a session of
            # its own and would go on measuring alone.
            stop(proc)
            raise
    seconds = time.monotonic() - started
    rows = tuple(parse(log.read_text(errors="replace")))
    return Outcome(headline, rows, problem, seconds, log)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the script's process group (its finally cleans up), SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- the table -----------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One table row: a measured Row, or a key that was not measured and why."""

    key: str
    target: str
    row: Row | None
    reason: str  # why not measured ("" when measured)
    command: str

    def status(self) -> str:
        if self.row is None:
            return f"**not measured**: {self.reason}"
        if self.row.met is None:
            return "reported"
        return "met" if self.row.met else "**not met**"

    def ok(self) -> bool:
        return self.row is not None and self.row.met is not False


def lines_of(outcomes: Iterable[Outcome]) -> list[Line]:
    """Every expected key once, in table order, then any extra rows a script printed."""
    lines = []
    for outcome in outcomes:
        headline = outcome.headline
        by_key = {row.key: row for row in outcome.rows}
        for key, target in headline.rows:
            row = by_key.pop(key, None)
            if row is None:
                reason = outcome.problem or "the script printed no such row"
                lines.append(Line(key, target, None, reason, headline.command()))
            else:
                lines.append(Line(key, row.target, row, "", row.command))
        for row in by_key.values():  # measured now, just not in HEADLINES yet
            lines.append(Line(row.key, row.target, row, "", row.command))
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(lines: Sequence[Line], header: Sequence[str]) -> str:
    out = [*header, ""]
    out.append("| key | target | figure: median (min-max, n) | clock includes | status | command |")
    out.append("|---|---|---|---|---|---|")
    for line in lines:
        figure = "-" if line.row is None else line.row.figure()
        clock = "-" if line.row is None else line.row.clock
        cells = [f"`{line.key}`", line.target, figure, clock, line.status(), f"`{line.command}`"]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def replace_section(text: str, table: str, begin: str = BEGIN, end_marker: str = END) -> str:
    """``text`` with everything between the markers replaced by ``table``."""
    start = text.find(begin)
    end = text.find(end_marker)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"no {begin!r} ... {end_marker!r} section to replace")
    if text.find(begin, start + 1) >= 0 or text.find(end_marker, end + 1) >= 0:
        raise ValueError("the summary markers appear more than once")
    return text[: start + len(begin)] + "\n" + table + text[end:]


# -- where and when --------------------------------------------------------------


def loadavg() -> str:
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def commit(output: Path) -> str:
    """HEAD, ``-dirty`` if a tracked file other than the table's own changed."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    # The output file is left out: the --full run writes it, then the
    # reduced run that follows would call its own commit dirty.
    paths = ["."]
    if output.resolve().is_relative_to(REPO):
        paths.append(f":(exclude){output.resolve().relative_to(REPO)}")
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{head}-dirty" if changed else head


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as file:
        mem_kib = int(file.readline().split()[1])
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False)
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_kib / 2**20:.0f} GiB, kernel {platform.release()}, "
        f"{nft.stdout.strip() or 'nft ?'}, Python {platform.python_version()}"
    )


def header(
    revision: str,
    started: datetime,
    load_before: str,
    load_after: str,
    where: str,
    took: float,
    sizes: str = "reduced runs",
) -> list[str]:
    return [
        f"Measured by `bench/summary.py` at commit `{revision}`, "
        f"{started:%Y-%m-%d %H:%M} UTC, in {took / 60:.1f} min "
        f"({sizes}: see each command).",
        f"Load average (1/5/15 min) before: {load_before}; after: {load_after}.",
        f"Machine: {where}.",
    ]


# -- main --------------------------------------------------------------------------


def _interrupted(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def selected(only: Sequence[str]) -> list[Headline]:
    if not only:
        return list(HEADLINES)
    chosen = [h for h in HEADLINES if h.script in only or any(k in only for k, _ in h.rows)]
    unknown = set(only) - {h.script for h in HEADLINES} - {k for h in HEADLINES for k, _ in h.rows}
    if unknown:
        raise SystemExit(f"unknown script or key: {', '.join(sorted(unknown))}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    parser.add_argument(
        "--only", action="append", default=[], help="a script or a row key (repeatable)"
    )
    parser.add_argument("--logs", type=Path, help="keep each script's output here")
    parser.add_argument(
        "--full", action="store_true", help="the sizes the targets name (about an hour)"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    headlines = [h.sized(args.full) for h in selected(args.only)]
    total_budget_s = FULL_BUDGET_S if args.full else TOTAL_BUDGET_S
    if not args.dry_run and args.only:
        # A partial table would look like a whole one: only full runs are written.
        parser.error("--only needs --dry-run")
    revision = commit(args.output)
    started_at = datetime.now(UTC)
    load_before = loadavg()
    where = machine()
    # Bytecode as a pip install leaves it: a shell with PYTHONDONTWRITEBYTECODE
    # (or a checkout newer than its .pyc) would otherwise put recompiling
    # every module into each fresh process's start-up figure.
    for package in ("edgectl", "bench"):
        compileall.compile_dir(REPO / package, quiet=1)
    started = time.monotonic()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-summary-") as tmp:
        logdir = args.logs or Path(tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        for headline in headlines:
            left = total_budget_s - (time.monotonic() - started)
            print(f"{headline.command()}  (budget {headline.budget_s:.0f} s) ...", flush=True)
            outcome = run_headline(headline, min(headline.budget_s, left), logdir)
            got = ", ".join(r.key for r in outcome.rows) or "no rows"
            print(
                f"  {outcome.seconds:.0f} s, {got}"
                + (f"; {outcome.problem}" if outcome.problem else ""),
                flush=True,
            )
            if outcome.problem and outcome.log is not None:
                tail = outcome.log.read_text(errors="replace").splitlines()[-5:]
                print("\n".join(f"    | {line}" for line in tail), flush=True)
            outcomes.append(outcome)
    took = time.monotonic() - started
    lines = lines_of(outcomes)
    sizes = "full-size runs" if args.full else "reduced runs"
    table = render_table(
        lines, header(revision, started_at, load_before, loadavg(), where, took, sizes)
    )
    print("\n" + table)
    if not args.dry_run:
        markers = (FULL_BEGIN, FULL_END) if args.full else (BEGIN, END)
        args.output.write_text(replace_section(args.output.read_text(), table, *markers))
        print(f"wrote the summary table into {args.output}")
    return 0 if all(line.ok() for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
