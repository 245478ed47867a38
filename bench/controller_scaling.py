"""Controller write latency against holds stored: quarantine create and session
upsert p99 with --held quarantines stored, against --baseline held, same run.

    .venv/bin/python bench/controller_scaling.py            # 100k vs 1k, 7 rounds x 200
    .venv/bin/python bench/controller_scaling.py --quick    # 100k vs 1k, 3 rounds x 100

Two controller processes (one SQLite store each, seeded through the bulk
paths: sessions, quarantines, their compiled entries and audit records) on
127.0.0.1.  Each round sends, to both stores in turn (order alternating
round by round), --requests quarantine creates for accounts that hold an
address, then --requests session moves (PUT /v1/accounts/{a}/session), every
other one of a held account (its keys are recompiled in the same
transaction).  One client, one request at a time: the figure is what a
request costs, not queueing.  Creates are lifted after each round (not
timed), so each round starts with the same number held.  The headline is
the median over rounds of p99(held) / p99(baseline), with the min-max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import install_signal_handlers
from _results import Row, emit
from controller_common import (
    address,
    database,
    netops_client,
    percentile,
    seed_accounts,
    seed_quarantines,
    seed_world,
)

MOVES = 2_000_000  # session moves go to address(MOVES + n): above every seeded address


@dataclass
class Side:
    """One store at one size, its controller, and what was measured on it."""

    held: int
    http: httpx.Client
    creates: list[list[float]] = field(default_factory=list)  # per round
    moves: list[list[float]] = field(default_factory=list)


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _timed(
    http: httpx.Client, method: str, path: str, body: dict[str, str], expect: int
) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = http.request(method, path, json=body)
    took = time.perf_counter() - started
    if response.status_code != expect:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return took, response


def _round(side: Side, number: int, requests: int, rounds: int) -> None:
    """Creates then moves on one side; the creates are lifted afterwards, untimed."""
    # Accounts seeded with a session and never held: acct{held}.. are
    # quarantined (one block a round), the block after them only moves.
    fresh = side.held + number * requests
    unheld = side.held + (rounds + number) * requests
    created: list[int] = []
    creates = []
    for n in range(requests):
        body = {"account": f"acct{fresh + n}", "mode": "smtp", "reason": "bench", "ticket": "B-1"}
        took, response = _timed(side.http, "POST", "/v1/quarantines", body, 201)
        creates.append(took)
        created.append(response.json()["quarantine"]["id"])
    moves = []
    stride = max(1, side.held // requests)
    for n in range(requests):
        # Every other move is of a held account (spread over all of them).
        account = (n // 2) * stride if n % 2 == 0 else unheld + n
        body = {"ipv4": address(MOVES + number * requests + n).address}
        moves.append(_timed(side.http, "PUT", f"/v1/accounts/acct{account}/session", body, 200)[0])
    side.creates.append(creates)
    side.moves.append(moves)
    for ident in created:
        _timed(side.http, "POST", f"/v1/quarantines/{ident}/lift", {"reason": "bench"}, 200)


def _ratios(big: list[list[float]], base: list[list[float]]) -> list[float]:
    return [percentile(b, 0.99) / percentile(a, 0.99) for b, a in zip(big, base, strict=True) if a]


def _row(key: str, what: str, ratios: list[float], held: int, baseline: int, command: str) -> Row:
    value = statistics.median(ratios)
    return Row(
        key=key,
        target=f"{what} p99 at {held:,} held <= 1.5x of {baseline:,} held",
        value=value,
        low=min(ratios),
        high=max(ratios),
        unit=f"x (p99 at {held // 1000}k / p99 at {baseline // 1000}k held)",
        clock="HTTP round trip on 127.0.0.1, one client, SQLite, one controller process",
        runs=len(ratios),
        met=value <= 1.5,
        command=command,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--held", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200, help="per round, per kind, per side")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 100 (a few minutes)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 3, 100
    command = ".venv/bin/python bench/controller_scaling.py" + (" --quick" if args.quick else "")
    install_signal_handlers()  # SIGTERM unwinds too: controllers stopped, stores removed
    print(f"load average at start: {_load()}")
    extra = 2 * args.rounds * args.requests  # fresh accounts for creates and unheld moves
    sides: list[Side] = []
    with ExitStack() as stack:
        for held in (args.baseline, args.held):
            path, store = stack.enter_context(database())
            started = time.monotonic()
            seed_world(store)
            seed_accounts(store, held + extra)
            seed_quarantines(store, 0, held)
            http = netops_client(stack, path, store)
            print(f"seeded {held:,} held in {time.monotonic() - started:.0f} s")
            sides.append(Side(held, http))
        baseline, big = sides
        print(f"load average after seeding: {_load()}")
        for number in range(args.rounds):
            order = (baseline, big) if number % 2 == 0 else (big, baseline)
            for side in order:
                _round(side, number, args.requests, args.rounds)
            p99 = [percentile(s.creates[-1], 0.99) * 1000 for s in sides]
            p99 += [percentile(s.moves[-1], 0.99) * 1000 for s in sides]
            print(
                f"round {number + 1}: create p99 {p99[0]:.1f} / {p99[1]:.1f} ms, "
                f"move p99 {p99[2]:.1f} / {p99[3]:.1f} ms "
                f"({args.baseline:,} / {args.held:,} held), load {_load()}"
            )
    for label, pick in (("create", lambda s: s.creates), ("move", lambda s: s.moves)):
        for side in sides:
            rounds = pick(side)
            p50 = statistics.median(percentile(r, 0.50) for r in rounds) * 1000
            p99 = [percentile(r, 0.99) * 1000 for r in rounds]
            print(
                f"{label:6} at {side.held:>7,} held: p50 {p50:.1f} ms, p99 median "
                f"{statistics.median(p99):.1f} ms ({min(p99):.1f}-{max(p99):.1f})"
            )
    print(f"load average at end: {_load()}")
    emit(
        _row(
            "quarantine_create_p99_scaling",
            "quarantine create (POST /v1/quarantines)",
            _ratios(big.creates, baseline.creates),
            args.held,
            args.baseline,
            command,
        )
    )
    emit(
        _row(
            "session_upsert_p99_scaling",
            "session upsert (PUT /v1/accounts/{a}/session, half of them held accounts)",
            _ratios(big.moves, baseline.moves),
            args.held,
            args.baseline,
            command,
        )
    )


if __name__ == "__main__":
    main()
