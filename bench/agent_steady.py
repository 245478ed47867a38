"""The agent with a million keys: cold start, restore, steady-state CPU/RSS, one delta, repair.

One agent process on a bare bench namespace, talking to a stand-in
controller (stdlib HTTP in this process) that serves a 1M-key snapshot,
then holds every long-poll for its full wait and answers "no change" --
the steady state of a gateway nobody is changing.  (Seeding a million
accounts and quarantines into the real controller would measure the
controller's seeding, not the agent.)

.venv/bin/python bench/agent_steady.py [--keys 1000000] [--seconds 20] [--reps 3]

Each round first loads the hand-written script of the same keys with
``nft -f`` into a fresh namespace (the baseline, same run, interleaved),
then: agent cold start, steady RSS/CPU, ``nft flush ruleset`` and the
repair (structure back, then keys back), agent restart from its state file.
Ratios are per round (agent phase / that round's raw load); rows are
medians over rounds with min-max.  (One delta on a million keys is
bench/agent_delta_path.py.)
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_BASE,
    build_state,
    handwritten_script,
    install_signal_handlers,
    machine,
    namespace,
    run,
    run_id,
)
from _results import emit_samples
from agent_common import Probe, agents, cpu_seconds, rss_mib, write_agent

from edgectl.model import DesiredState, QuarantineMode
from edgectl.model.delta import diff
from edgectl.model.serial import delta_to_data, state_to_data
from edgectl.testing.wait import wait_until

GATEWAY = "bench-gw"


class StandIn:
    """Serves one gateway's snapshot and, once ``advance`` is called, one delta."""

    def __init__(self, state: DesiredState) -> None:
        self.state = state
        self.current = state.revision
        self.snapshot = self._body(
            {"kind": "snapshot", "revision": state.revision, "state": state_to_data(state)}
        )
        self.delta: bytes | None = None
        self.next_revision = state.revision
        self.changed = threading.Event()

    @staticmethod
    def _body(document: object) -> bytes:
        return json.dumps(document).encode()

    def prepare(self, new: DesiredState) -> None:
        """Compute the delta body ahead (a 1M-key diff is the stand-in's cost, not the agent's)."""
        delta = delta_to_data(diff(self.state, new))
        self.delta = self._body({"kind": "delta", "revision": new.revision, "delta": delta})
        self.next_revision = new.revision

    def advance(self) -> None:
        self.current = self.next_revision
        self.changed.set()

    def answer(self, since: int | None, wait: float) -> bytes:
        if since == self.state.revision and self.current == since:
            self.changed.wait(wait)  # a long-poll with nothing new (or woken by advance)
        if since == self.state.revision and self.current != since and self.delta is not None:
            return self.delta
        if since != self.current:
            return self.snapshot
        if since != self.state.revision:
            threading.Event().wait(wait)  # nothing after the one delta
        empty = {
            "schema": 1,
            "gateway": GATEWAY,
            "from_revision": since,
            "to_revision": since,
            "structure": None,
            "quarantines": {"upserts": [], "removals": []},
            "exemptions": {"upserts": [], "removals": []},
        }
        return self._body({"kind": "delta", "revision": since, "delta": empty})

    def serve(self) -> tuple[ThreadingHTTPServer, int]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                since = int(query["since"][0]) if "since" in query else None
                body = stand_in.answer(since, float(query.get("wait", ["0"])[0]))
                self._send(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._send(b"{}")

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, server.server_address[1]


def first_key(state: DesiredState) -> bytes:
    for key, q in state.quarantines.items():
        if q.mode is QuarantineMode.SMTP and key.version == 4:
            return socket.inet_aton(key.address)
    raise LookupError("no IPv4 smtp quarantine")


def log_has(path: Path, text: str) -> bool:
    return text in path.read_text(errors="replace")


def _raw_load(script: Path, rid: str, rep: int) -> float:
    """The baseline: ``nft -f`` of the hand-written script of the same keys, fresh namespace."""
    with namespace(f"{BENCH_BASE}-{rid}-raw-{rep}") as ns:
        start = time.monotonic()
        run(["ip", "netns", "exec", ns, "nft", "-f", str(script)])
        return time.monotonic() - start


def one_round(
    state: DesiredState, args: argparse.Namespace, rid: str, rep: int, script: Path
) -> dict[str, float]:
    """Raw load, then the agent: cold start, steady state, drift repair, restart."""
    got = {"raw": _raw_load(script, rid, rep)}
    print(f"  rep {rep + 1}: raw nft -f {got['raw']:.2f} s", flush=True)
    stand_in = StandIn(state)
    key = first_key(state)
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-steady-") as root, ExitStack() as stack:
        workdir = Path(root)
        ns = stack.enter_context(namespace(f"{BENCH_BASE}-{rid}-steady-{rep}"))
        server, port = stand_in.serve()
        stack.callback(server.shutdown)
        config = write_agent(workdir, GATEWAY, "edg_bench", ns, f"http://127.0.0.1:{port}")
        log = workdir / f"{GATEWAY}.log"
        probe = Probe(ns)
        stack.callback(probe.close)

        # 1. Cold start: no state file, the snapshot comes from the controller.
        started = time.monotonic()
        with agents([config], workdir) as procs:
            wait_until(lambda: probe.has("q_smtp_4", key), 600, what="cold start", interval=0.01)
            got["cold"] = time.monotonic() - started
            pid = procs[0].pid
            wait_until(
                lambda: (config.parent / "state" / "applied.json").exists(), 600, what="persist"
            )
            print(f"  rep {rep + 1}: cold start {got['cold']:.2f} s", flush=True)
            time.sleep(2)  # let the state-file writer and first report settle before sampling
            # 2. Steady state: nothing changes.
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            rss = []
            while time.monotonic() - t0 < args.seconds:
                rss.append(rss_mib(pid))
                time.sleep(1)
            got["cpu"] = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            got["rss"] = max(rss)
            got["hwm"] = rss_mib(pid, "VmHWM")
            print(
                f"  rep {rep + 1}: steady {args.seconds:.0f} s: CPU {got['cpu'] * 100:.2f} % "
                f"of a core, RSS {got['rss']:.0f} MiB (peak {got['hwm']:.0f} MiB)",
                flush=True,
            )
            # 3. Drift: someone flushes the ruleset.
            # The clock starts before the flush command: the agent may repair
            # while that process is still exiting.
            flushed = time.monotonic()
            run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"])
            wait_until(probe.has_table, 120, what="structure back", interval=0.01)
            got["structure"] = time.monotonic() - flushed
            wait_until(lambda: probe.has("q_smtp_4", key), 120, what="repair", interval=0.01)
            got["repair"] = time.monotonic() - flushed
            print(
                f"  rep {rep + 1}: nft flush ruleset -> table back {got['structure']:.2f} s, "
                f"keys back {got['repair']:.2f} s",
                flush=True,
            )
        # 4. Restart from the state file (controller answers only after the restore).
        restarted = time.monotonic()
        with agents([config], workdir):
            wait_until(
                lambda: log_has(log, "restored revision"), 600, what="restore", interval=0.02
            )
            got["restart"] = time.monotonic() - restarted
            print(f"  rep {rep + 1}: restart from disk {got['restart']:.2f} s", flush=True)
    return got


def _label(keys: int) -> str:
    return f"{keys // 1000}k" if keys < 1_000_000 else f"{keys // 1_000_000}m"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    install_signal_handlers()
    rid = run_id()
    print(f"# agent_steady: {args.keys:,} keys, {args.reps} rounds")
    print(f"machine: {machine()}")
    t = time.monotonic()
    state = replace(build_state(args.keys, expiring_fraction=0.0), gateway=GATEWAY, revision=1)
    print(
        f"built a {len(state.quarantines) + len(state.exemptions):,}-key state in "
        f"{time.monotonic() - t:.1f} s"
    )
    rounds = []
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-raw-") as tmp:
        script = Path(tmp, "handwritten.nft")
        script.write_text(handwritten_script(state))
        for rep in range(args.reps):
            rounds.append(one_round(state, args, rid, rep, script))
    command = (
        f".venv/bin/python bench/agent_steady.py --keys {args.keys} --reps {args.reps} "
        f"--seconds {args.seconds:g}"
    )
    size = _label(args.keys)

    def ratio_row(key: str, phase: str, limit: float, target: str, clock: str) -> None:
        ratios = [r[phase] / r["raw"] for r in rounds]
        emit_samples(
            key,
            target,
            ratios,
            unit="x raw nft -f",
            clock=clock,
            command=command,
            met=lambda value: value <= limit,
        )

    ratio_row(
        f"cold_start_{size}",
        "cold",
        2.0,
        f"agent cold start, {args.keys:,} keys <= 2x raw nft -f",
        "agent process start (no state file) -> a key in the kernel; raw: nft -f, fresh netns",
    )
    ratio_row(
        f"restart_from_disk_{size}",
        "restart",
        2.0,
        f"agent restart from disk, {args.keys:,} keys <= 2x raw nft -f",
        "agent process start (state file) -> 'restored revision' logged (after its commit)",
    )
    ratio_row(
        f"drift_repair_{size}",
        "repair",
        1.5,
        f"drift repair after nft flush ruleset, {args.keys:,} keys <= 1.5x raw nft -f",
        "nft flush ruleset started -> a key back in the kernel",
    )
    for key, field, limit, unit, target, clock in (
        (
            "drift_structure_first",
            "structure",
            1.0,
            "s",
            "after nft flush ruleset, the table's structure back within 1 s",
            "nft flush ruleset started -> table inet edgectl exists again (netlink probe)",
        ),
        (
            f"agent_rss_{size}",
            "rss",
            400.0,
            "MiB",
            f"agent RSS steady at {args.keys:,} keys <= 400 MiB",
            "max VmRSS sampled each second over the steady window",
        ),
    ):
        emit_samples(
            key,
            target,
            [r[field] for r in rounds],
            unit=unit,
            clock=clock,
            command=command,
            met=lambda value, limit=limit: value <= limit,
        )


if __name__ == "__main__":
    main()
