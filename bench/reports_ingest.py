"""Abuse reports and escalation at scale (issue 14): 10,000 reports in one request,
attributed from the session history; a replay over a month of offender events.

    .venv/bin/python bench/reports_ingest.py             # 1M intervals, 1M events, 5/3 rounds
    .venv/bin/python bench/reports_ingest.py --reduced   # 100k intervals, 200k events, 3/2 rounds

Ingest: an SQLite store seeded with --history intervals (40 per address
over 400 days, as bench/session_history.py seeds them), a dynamic pool and
a gateway, and the controller app in process (FastAPI's TestClient, an
abuse-role token).  Each round posts one CSV of --reports reports
(address, time, class, message id) at random addresses and times of the
seeded span, new ids each round: the clock runs from the request to its
answer, i.e. parsing, de-duplication, attribution of every report, cases
and the commit.  Headline: the median over rounds, min-max.

Replay: another SQLite store with --events offender episodes of --accounts
accounts over 30 days (ratelimit, 1-200 events each), seeded straight into
the table; each round runs ``store.replay.replay`` of a three-step ladder
(threshold 50) over the month, as POST /v1/policies/{name}/replay does.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import install_signal_handlers
from _results import emit_samples
from controller_common import database, seed_world
from fastapi.testclient import TestClient
from session_history import PER_ADDRESS, T0, _text, seed_history

from edgectl.controller.app import create_app
from edgectl.controller.auth import Role
from edgectl.controller.escalation import ladder
from edgectl.controller.settings import Settings
from edgectl.controller.store import replay as replays
from edgectl.controller.store import tokens
from edgectl.model import Prefix

SPAN = timedelta(days=400)
MONTH = timedelta(days=30)
BASE = int(Prefix.parse("100.64.0.0/10").value)
LADDER = {
    "strikes": [{"source": "offender", "kind": "ratelimit", "threshold": 50}],
    "steps": [
        {"strike": 1, "mode": "walled-garden", "duration": 86_400},
        {"strike": 2, "mode": "smtp", "duration": 7 * 86_400},
        {"strike": 3, "mode": "block", "review": True},
    ],
    "window": 30 * 86_400,
}


def _csv(reports: int, addresses: int, round_number: int) -> str:
    rng = random.Random(round_number)
    lines = ["address,time,class,message_id"]
    for n in range(reports):
        i = rng.randrange(addresses)
        at = T0 + timedelta(seconds=rng.randrange(int(SPAN.total_seconds())))
        address = Prefix(4, BASE + 1 + i, 32)  # bench/controller_common.address
        lines.append(f"{address},{at.isoformat()},spam,r{round_number}-{n}")
    return "\n".join(lines) + "\n"


def ingest_rounds(history: int, reports: int, rounds: int) -> list[float]:
    times = []
    with database() as (path, store):
        seconds = seed_history(path, store, history)
        print(f"seeded {history:,} intervals in {seconds:.0f} s")
        seed_world(store)
        token = tokens.create(store, "bench", Role.ABUSE)
        settings = Settings(database_url=store.database.url)
        app = create_app(settings, store, sweep=False)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}
        with TestClient(app) as client:
            for number in range(rounds):
                body = _csv(reports, history // PER_ADDRESS, number)
                begun = time.perf_counter()
                response = client.post("/v1/reports", content=body, headers=headers)
                took = time.perf_counter() - begun
                assert response.status_code == 200, response.text[:500]
                answer = response.json()
                assert answer["accepted"] == reports, answer
                times.append(took)
                print(
                    f"round {number + 1}: {reports:,} reports in {took:.2f} s, "
                    f"{answer['attributed']:,} attributed, {len(answer['cases']):,} cases"
                )
    return times


def seed_episodes(path: Path, accounts: int, events: int, end: datetime) -> float:
    started = time.monotonic()
    rng = random.Random(11)
    raw = sqlite3.connect(path)
    try:
        raw.execute("PRAGMA synchronous=OFF")
        raw.execute("BEGIN")
        created = _text(end - MONTH)
        raw.executemany(
            "INSERT INTO accounts (id, ref, created_at) VALUES (?, ?, ?)",
            ((n, f"racct{n}", created) for n in range(1, accounts + 1)),
        )
        month = int(MONTH.total_seconds())
        rows = []
        for n in range(events):
            account = rng.randrange(accounts) + 1
            # Microseconds: two episodes of one key never share a first_seen (unique).
            last = end - MONTH + timedelta(microseconds=rng.randrange(month * 1_000_000))
            key = str(Prefix(4, BASE + account, 32))
            rows.append(
                (
                    "gw",
                    key,
                    "ratelimit",
                    "residential",
                    _text(last - timedelta(minutes=5)),
                    _text(last),
                    rng.randrange(1, 200),
                    account,
                    n,
                )
            )
        raw.executemany(
            "INSERT INTO offender_episodes (gateway, key, kind, policy, first_seen, last_seen,"
            " events, account_id, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row[:8], row[8] + 1) for row in rows],
        )
        raw.execute("COMMIT")
    finally:
        raw.close()
    return time.monotonic() - started


def replay_rounds(accounts: int, events: int, rounds: int) -> tuple[list[float], dict[str, object]]:
    times = []
    result: dict[str, object] = {}
    end = datetime(2026, 3, 1, tzinfo=UTC)
    with database() as (path, store):
        seed_world(store)
        seconds = seed_episodes(path, accounts, events, end)
        store.database.checkpoint()
        print(f"seeded {events:,} offender episodes in {seconds:.0f} s")
        caps = ladder.Caps(100, 20)
        for number in range(rounds):
            begun = time.perf_counter()
            result = replays.replay(store, "enforce", LADDER, end - MONTH, end, caps)
            took = time.perf_counter() - begun
            times.append(took)
            assert result["events"] == events, result["events"]
            steps = [s["count"] for s in result["steps"]]  # type: ignore[index]
            print(
                f"round {number + 1}: replay of {events:,} events in {took:.2f} s: "
                f"{result['strikes']:,} strikes, per step {steps}, {result['outcomes']}"
            )
    return times, result


def _emit(
    key: str, target: str, values: list[float], clock: str, limit: float, command: str
) -> None:
    emit_samples(
        key, target, values, unit="s", clock=clock, command=command, met=lambda v: v < limit
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", type=int, default=1_000_000, help="session intervals")
    parser.add_argument("--reports", type=int, default=10_000, help="reports in one request")
    parser.add_argument("--events", type=int, default=1_000_000, help="offender episodes")
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts offending")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replays", type=int, default=3)
    parser.add_argument("--reduced", action="store_true", help="100k intervals, 200k events")
    args = parser.parse_args()
    if args.reduced:
        args.history, args.events, args.rounds, args.replays = 100_000, 200_000, 3, 2
    command = ".venv/bin/python bench/reports_ingest.py" + (" --reduced" if args.reduced else "")
    install_signal_handlers()
    ingest = ingest_rounds(args.history, args.reports, args.rounds)
    print(
        f"ingest: {args.reports:,} reports over {args.history:,} intervals: median "
        f"{statistics.median(ingest):.2f} s ({min(ingest):.2f}-{max(ingest):.2f})"
    )
    _emit(
        f"reports_ingest_{args.reports // 1000}k",
        f"{args.reports:,} reports in one request, attributed over {args.history:,} "
        "intervals: < 5 s (SQLite)",
        ingest,
        "POST /v1/reports (CSV) to its answer, in process, SQLite, committed",
        5.0,
        command,
    )
    replayed, _ = replay_rounds(args.accounts, args.events, args.replays)
    print(
        f"replay: {args.events:,} events: median {statistics.median(replayed):.2f} s "
        f"({min(replayed):.2f}-{max(replayed):.2f})"
    )
    label = (
        f"{args.events // 1_000_000}m" if args.events >= 1_000_000 else f"{args.events // 1000}k"
    )
    _emit(
        f"escalation_replay_events_{label}",
        f"replay of a month of {args.events:,} offender events: < 60 s (SQLite)",
        replayed,
        "store.replay.replay (read, simulate, result), in process, SQLite",
        60.0,
        command,
    )


if __name__ == "__main__":
    main()
