"""The agent with a million keys: cold start, restore, steady-state CPU/RSS, one delta, repair.

One agent process on a bare bench namespace, talking to a stand-in
controller (stdlib HTTP in this process) that serves a 1M-key snapshot,
then holds every long-poll for its full wait and answers "no change" --
the steady state of a gateway nobody is changing.  (Seeding a million
accounts and quarantines into the real controller would measure the
controller's seeding, not the agent.)

.venv/bin/python bench/agent_steady.py [--keys 1000000] [--seconds 60]
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

from _common import BENCH_BASE, build_state, install_signal_handlers, namespace, run, run_id
from agent_common import Probe, agents, cpu_seconds, rss_mib, wait_for, write_agent

from edgectl.model import DesiredState, Prefix, Quarantine, QuarantineMode
from edgectl.model.delta import diff
from edgectl.model.serial import delta_to_data, state_to_data

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    install_signal_handlers()
    rid = run_id()
    t = time.monotonic()
    state = replace(build_state(args.keys, expiring_fraction=0.0), gateway=GATEWAY, revision=1)
    print(
        f"built a {len(state.quarantines) + len(state.exemptions):,}-key state in "
        f"{time.monotonic() - t:.1f} s"
    )
    stand_in = StandIn(state)
    print(f"snapshot body {len(stand_in.snapshot) / 1e6:.0f} MB")
    key = first_key(state)
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-steady-") as root, ExitStack() as stack:
        workdir = Path(root)
        ns = stack.enter_context(namespace(f"{BENCH_BASE}-{rid}-steady"))
        server, port = stand_in.serve()
        stack.callback(server.shutdown)
        config = write_agent(workdir, GATEWAY, "edg_bench", ns, f"http://127.0.0.1:{port}")
        log = workdir / f"{GATEWAY}.log"
        probe = Probe(ns)
        stack.callback(probe.close)

        # 1. Cold start: no state file, the snapshot comes from the controller.
        started = time.monotonic()
        with agents([config], workdir) as procs:
            wait_for(lambda: probe.has("q_smtp_4", key), 600, "cold start")
            cold = time.monotonic() - started
            pid = procs[0].pid
            wait_for(lambda: (config.parent / "state" / "applied.json").exists(), 600, "persist")
            persisted = time.monotonic() - started
            print(
                f"cold start (fetch + parse + full sync of the snapshot): {cold:.1f} s; "
                f"state file written {persisted:.1f} s after start"
            )
            time.sleep(2)  # let the state-file writer and first report settle before sampling
            # 2. Steady state: nothing changes.
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            rss = []
            while time.monotonic() - t0 < args.seconds:
                rss.append(rss_mib(pid))
                time.sleep(1)
            cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            print(
                f"steady state over {args.seconds:.0f} s: CPU {cpu * 100:.2f} % of one core, "
                f"RSS {max(rss):.0f} MiB (peak {rss_mib(pid, 'VmHWM'):.0f} MiB)"
            )
            # 3. One quarantine on top of a million.
            extra = Prefix.parse("100.127.255.254")
            new = replace(
                state,
                revision=2,
                quarantines={**state.quarantines, extra: Quarantine(extra, QuarantineMode.SMTP)},
            )
            stand_in.prepare(new)
            sent = time.monotonic()
            stand_in.advance()
            wait_for(
                lambda: probe.has("q_smtp_4", socket.inet_aton("100.127.255.254")),
                60,
                "one delta",
                step=0.001,
            )
            print(
                f"one quarantine delta on a {args.keys:,}-key gateway: "
                f"{(time.monotonic() - sent) * 1000:.1f} ms from answer to element in force"
            )
            wait_for(lambda: log_has(log, "revision 2 in force"), 60, "log line")
            line = next(x for x in log.read_text().splitlines() if "revision 2 in force" in x)
            print(f"  agent's own account: {line.split('edgectl.agent: ')[1]}")
            # 4. Drift: someone flushes the ruleset.
            time.sleep(2)
            run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"])
            flushed = time.monotonic()
            wait_for(lambda: probe.has("q_smtp_4", key), 120, "repair", step=0.01)
            print(
                f"nft flush ruleset -> repaired (full sync of {args.keys:,} keys) in "
                f"{time.monotonic() - flushed:.1f} s"
            )
        # 5. Restart from the state file (controller answers only after the restore).
        restarted = time.monotonic()
        with agents([config], workdir):
            wait_for(lambda: log_has(log, "restored revision"), 600, "restore", step=0.05)
            print(
                f"restart: last-known-good restored from disk in "
                f"{time.monotonic() - restarted:.1f} s"
            )


if __name__ == "__main__":
    main()
