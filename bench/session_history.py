"""Session history at scale (issue 11): "who held X at T" over 10M intervals, and a
50,000-Start reconnect storm through the accounting feed.

    .venv/bin/python bench/session_history.py             # 10M vs 100k rows, 7 rounds
    .venv/bin/python bench/session_history.py --reduced   # 1M vs 100k rows, 5 rounds

Lookup: two SQLite stores, --rows and --baseline intervals of history
(seeded with the driver's executemany into the migrated table, indexes
built after the rows, as a restore would), 40 intervals per address over
400 days, IPv4 and IPv6 on every row.  Each round times --lookups
``history.holder_at`` calls (a read transaction and the query, in process:
what the API route adds is the same at any size) at random addresses and
times, alternating IPv4 addresses and IPv6 /128s inside the delegated /56s,
on each store in turn (order alternating by round).  Headline: the median
over rounds of p99 on the big store, min-max; the ratio to the baseline's
p99 is printed as well.

Storm: a store holding --accounts sessions of one NAS (1 % of the accounts
quarantined), then one ``feed.apply_events`` batch of an Accounting-On and
50,000 Starts at new addresses (every account moves; held keys recompile):
time until it returns, i.e. until committed.  Repeated --storms times on the
same store, so each storm finds the previous one's history.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import install_signal_handlers
from _results import Row, emit
from controller_common import address, database, percentile, seed_quarantines, seed_world

from edgectl.controller.store import Store, history
from edgectl.controller.store import schema as t
from edgectl.controller.store.feed import AccountingEvent, apply_events
from edgectl.model import Prefix

PER_ADDRESS = 40  # intervals per address: 400 days of ten-day leases
DAY = timedelta(days=1)
T0 = datetime(2025, 1, 1, tzinfo=UTC)
V6_BASE = int(Prefix.parse("2001:db8:a000::/36").value)
INSERT_BATCH = 100_000


def _v6(index: int) -> Prefix:
    return Prefix(6, V6_BASE + (index << 72), 56)


def _text(moment: datetime) -> str:
    # As schema.Instant stores it on SQLite (db.time_param): 10M rows convert
    # 30M times, and isoformat is ~5x faster than strftime.
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def _rows(addresses: int, accounts: int) -> object:
    """Interval j of address i: [T0 + 10j days + jitter, +9 days); the last one open."""
    rng = random.Random(7)
    for i in range(addresses):
        v4 = address(i)
        v6 = _v6(i)
        v4_text, v4_hex = str(v4), f"{v4.value:08x}"
        v6_text, v6_hex = str(v6), f"{v6.value:032x}"
        for j in range(PER_ADDRESS):
            started = T0 + j * 10 * DAY + timedelta(minutes=rng.randrange(600))
            ended = None if j == PER_ADDRESS - 1 else started + 9 * DAY
            start_text = _text(started)
            end_text = None if ended is None else _text(ended)
            yield (
                (i * 7919 + j * 104_729) % accounts + 1,
                "nas1",
                f"s{i:08d}-{j:02d}",
                v4_text,
                v4_hex,
                v6_text,
                v6_hex,
                start_text,
                start_text,
                start_text,
                end_text or start_text,
                end_text,
                end_text,
            )


def seed_history(path: Path, store: Store, rows: int) -> float:
    """``rows`` intervals straight into the migrated table; returns seconds taken."""
    started = time.monotonic()
    addresses = rows // PER_ADDRESS
    accounts = max(1, addresses * 2)
    indexes = [index for index in t.session_history.indexes]
    with store.database.engine.begin() as connection:
        for index in indexes:  # built after the rows: one sort each, not 10M random inserts
            index.drop(connection)
    raw = sqlite3.connect(path)
    try:
        raw.execute("PRAGMA synchronous=OFF")
        raw.execute("BEGIN")
        created = _text(T0)
        raw.executemany(
            "INSERT INTO accounts (id, ref, created_at) VALUES (?, ?, ?)",
            ((n, f"hacct{n}", created) for n in range(1, accounts + 1)),
        )
        columns = (
            "account_id, source, session_id, ipv4, ipv4_hex, ipv6, ipv6_hex, ipv4_seen,"
            " ipv6_seen, started, last_seen, stopped, ended"
        )
        batch: list[tuple[object, ...]] = []
        for row in _rows(addresses, accounts):  # type: ignore[attr-defined]
            batch.append(row)
            if len(batch) == INSERT_BATCH:
                raw.executemany(
                    f"INSERT INTO session_history ({columns}) VALUES ({'?,' * 12}?)", batch
                )
                batch.clear()
        if batch:
            raw.executemany(f"INSERT INTO session_history ({columns}) VALUES ({'?,' * 12}?)", batch)
        raw.execute("COMMIT")
    finally:
        raw.close()
    with store.database.engine.begin() as connection:
        for index in indexes:
            index.create(connection)
    store.database.checkpoint()
    return time.monotonic() - started


def _lookups(rows: int, count: int, seed: int) -> list[tuple[Prefix, datetime]]:
    rng = random.Random(seed)
    addresses = rows // PER_ADDRESS
    found = []
    for n in range(count):
        i = rng.randrange(addresses)
        when = T0 + timedelta(seconds=rng.randrange(PER_ADDRESS * 10 * 86_400))
        if n % 2 == 0:
            found.append((address(i), when))
        else:
            inside = Prefix(6, _v6(i).value + rng.randrange(1 << 72), 128)
            found.append((inside, when))
    return found


def _time_lookups(store: Store, queries: list[tuple[Prefix, datetime]]) -> tuple[list[float], int]:
    times, hits = [], 0
    for prefix, when in queries:
        begun = time.perf_counter()
        with store.read() as connection:
            found = history.holder_at(connection, prefix, when)
        times.append(time.perf_counter() - begun)
        hits += found is not None
    return times, hits


def storm_events(accounts: int, round_number: int, at: datetime) -> list[AccountingEvent]:
    """An Accounting-On, then a Start per account at an address it did not have."""
    offset = (round_number + 1) * accounts
    events = [AccountingEvent("bng1", "on", at, None, None)]
    for i in range(accounts):
        events.append(
            AccountingEvent(
                "bng1",
                "start",
                at + timedelta(milliseconds=1 + i % 5000),
                f"r{round_number}-{i}",
                f"acct{i}",
                address((offset + i) % (1 << 21)),
            )
        )
    return events


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--baseline", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lookups", type=int, default=2000, help="per round, per store")
    parser.add_argument("--accounts", type=int, default=50_000, help="Starts in a storm")
    parser.add_argument("--storms", type=int, default=3)
    parser.add_argument("--reduced", action="store_true", help="1M rows, 5 rounds, 2 storms")
    parser.add_argument(
        "--storm-database",
        help="a migrated, empty postgresql+psycopg:// database for the storm (default: SQLite)",
    )
    args = parser.parse_args()
    if args.reduced:
        args.rows, args.rounds, args.storms = 1_000_000, 5, 2
    command = ".venv/bin/python bench/session_history.py" + (" --reduced" if args.reduced else "")
    install_signal_handlers()
    print(f"load average at start: {_load()}")
    big_label = f"{args.rows // 1_000_000}m" if args.rows >= 1_000_000 else f"{args.rows // 1000}k"
    with ExitStack() as stack:
        stores = []
        for rows in (args.baseline, args.rows):
            path, store = stack.enter_context(database())
            seconds = seed_history(path, store, rows)
            print(f"seeded {rows:,} intervals in {seconds:.0f} s ({rows / seconds:,.0f}/s)")
            stores.append((rows, store))
        p99: dict[int, list[float]] = {rows: [] for rows, _ in stores}
        p50: dict[int, list[float]] = {rows: [] for rows, _ in stores}
        for number in range(args.rounds):
            order = stores if number % 2 == 0 else list(reversed(stores))
            for rows, store in order:
                times, hits = _time_lookups(store, _lookups(rows, args.lookups, number))
                p99[rows].append(percentile(times, 0.99) * 1000)
                p50[rows].append(percentile(times, 0.50) * 1000)
                print(
                    f"round {number + 1}: {rows:>10,} rows: p50 {p50[rows][-1]:.2f} ms, "
                    f"p99 {p99[rows][-1]:.2f} ms, {hits}/{args.lookups} held, load {_load()}"
                )
        big, base = p99[args.rows], p99[args.baseline]
        ratios = [b / a for b, a in zip(big, base, strict=True) if a]
        print(
            f"at lookup p99 median: {statistics.median(big):.2f} ms at {args.rows:,} rows, "
            f"{statistics.median(base):.2f} ms at {args.baseline:,}; "
            f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        )
        emit(
            Row(
                key=f"session_history_at_lookup_p99_{big_label}",
                target=f"'who held X at T' over {args.rows:,} intervals: p99 < 5 ms",
                value=statistics.median(big),
                low=min(big),
                high=max(big),
                unit="ms",
                clock="store.read() + history.holder_at in process, SQLite, IPv4/IPv6 alternating",
                runs=len(big),
                met=statistics.median(big) < 5,
                command=command,
            )
        )
        emit(
            Row(
                key=f"session_history_at_lookup_ratio_{big_label}",
                target=f"at lookup p99 at {args.rows:,} / at {args.baseline:,} intervals",
                value=statistics.median(ratios),
                low=min(ratios),
                high=max(ratios),
                unit="x",
                clock="same lookups, interleaved rounds",
                runs=len(ratios),
                met=None,
                command=command,
            )
        )
    if args.storms > 0:  # --storms 0: the lookups alone
        _emit_storms(args, command)
    print(f"load average at end: {_load()}")


def _emit_storms(args: argparse.Namespace, command: str) -> None:
    storms = _storm(args.accounts, args.storms, args.storm_database)
    kind = "postgresql" if args.storm_database else "sqlite"
    emit(
        Row(
            key=f"feed_storm_{args.accounts // 1000}k_starts_{kind}",
            target=f"{args.accounts:,} Starts + Accounting-On in one apply_events, until committed",
            value=statistics.median(storms),
            low=min(storms),
            high=max(storms),
            unit="s",
            clock=f"apply_events call to return (after commit), {kind}, 1% of accounts held",
            runs=len(storms),
            met=None,
            command=command,
        )
    )


@contextmanager
def _storm_store(url: str | None) -> Iterator[Store]:
    if url is None:
        with database() as (_, store):
            yield store
        return
    store = Store.open(url)
    try:
        yield store
    finally:
        store.close()


def _storm(accounts: int, storms: int, url: str | None) -> list[float]:
    with _storm_store(url) as store:
        seed_world(store)
        at = datetime.now(UTC) - timedelta(hours=storms + 1)
        started = time.monotonic()
        outcomes = apply_events(store, storm_events(accounts, 0, at)[1:])  # logged in already
        seed_quarantines(store, 0, max(1, accounts // 100))
        store.database.checkpoint()
        print(f"seeded {accounts:,} sessions in {time.monotonic() - started:.1f} s")
        assert all(o.status == "applied" for o in outcomes), outcomes[:3]
        times = []
        for number in range(1, storms + 1):
            events = storm_events(accounts, number, at + timedelta(hours=number))
            begun = time.perf_counter()
            outcomes = apply_events(store, events)
            times.append(time.perf_counter() - begun)
            applied = sum(o.status == "applied" for o in outcomes)
            store.database.checkpoint()  # as the sweeper does every few seconds
            print(
                f"storm {number}: {len(events):,} events in {times[-1]:.2f} s, {applied:,} applied"
            )
        return times


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


if __name__ == "__main__":
    main()
