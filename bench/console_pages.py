"""The web console's pages with a large store: 100k quarantines, 1M audit
entries and 10k offenders (10 gateways reporting 1,000 each, the report cap).

    .venv/bin/python bench/console_pages.py [--reduced] [--rounds 5]

Target (issue 12): every console page answers in < 300 ms server-side.
Measured from a client on 127.0.0.1 against a separate controller process
(uvicorn, as `edgectl controller` runs it), signed in through the console's
own form: the figure is the server's time plus a loopback round trip, an
upper bound of the server-side time.  ``--reduced``: a tenth of each, for a
quick run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import sqlalchemy as sa
from _results import Row, emit
from controller_common import address, controller, database, seed_accounts, seed_world, token

from edgectl.controller.auth import Role
from edgectl.controller.store import Store, bulk_holds, gateways, holds, offenders
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import now
from edgectl.model import GatewaySettings, QuarantineMode

TARGET_MS = 300.0
# walled-garden needs resolvers and a portal on the gateway; the bench's has neither.
MODES = (QuarantineMode.SMTP, QuarantineMode.BLOCK)
REPORTERS = 10  # gateways; each report holds at most 1,000 entries (MAX_REPORTED)
ACTIONS = ("session.start", "session.stop", "quarantine.update", "exemption.create", "token.create")


def seed_quarantines(store: Store, count: int) -> None:
    """Holds in ten batches with different actors, modes and tickets, so the list's
    counts per filter value have something to count."""
    batch = max(1, count // 10)
    for number, first in enumerate(range(0, count, batch)):
        spec = holds.QuarantineSpec(
            MODES[number % len(MODES)], "bench", account="bulk", ticket=f"T-{number % 4}"
        )
        accounts = [f"acct{i}" for i in range(first, min(first + batch, count))]
        bulk_holds.quarantine_accounts(store, f"token:analyst-{number % 7}", accounts, spec)


def seed_audit(store: Store, count: int, accounts: int, batch: int = 50_000) -> None:
    """Audit rows written directly (the store writes one per change, far slower
    to reach a million): many actors and actions, objects spread over accounts."""
    at = now() - timedelta(days=30)
    with store.read() as connection:
        seq = store.current_seq(connection)
    for first in range(0, count, batch):
        rows = [
            {
                "seq": seq + 1 + i,
                "at": at + timedelta(seconds=i),
                "actor": f"token:person-{i % 200}",
                "action": ACTIONS[i % len(ACTIONS)],
                "object_type": "account",
                "object_id": f"acct{i % accounts}",
                "before": None,
                "after": '{"bench": true}',
                "reason": None,
            }
            for i in range(first, min(first + batch, count))
        ]
        with store.database.write() as connection:
            connection.execute(sa.insert(t.audit), rows)


def seed_offenders(store: Store, per_gateway: int) -> None:
    """REPORTERS gateways (serving no pools: nothing to compile) each reporting
    ``per_gateway`` distinct subscriber keys, through the store's own report path."""
    kinds = ("op25b", "ratelimit", "quarantine", "concurrency")
    for g in range(REPORTERS):
        name = f"rep{g}"
        gateways.create_gateway(store, "bench", gateways.GatewaySpec(name, GatewaySettings(), ()))
        ident = gateways.gateway_id(store, name)
        seen = now()
        entries = tuple(
            offenders.Offender(
                address(g * per_gateway + i),
                kinds[i % len(kinds)],
                "bench",
                False,
                1 + i % 50,
                seen - timedelta(minutes=5),
                seen,
            )
            for i in range(per_gateway)
        )
        with store.write("bench") as change:
            offenders.replace(change, ident, offenders.OffenderReport(True, None, 300, entries))


def sign_in(http: httpx.Client, secret: str) -> None:
    page = http.get("/console/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text[:300]
    answer = http.post("/console/signin", data={"csrf": csrf.group(1), "token": secret})
    assert answer.status_code == 303, answer.text[:300]


def pages(accounts: int) -> list[tuple[str, str]]:
    middle = accounts // 2
    held_at = quote((now() - timedelta(seconds=1)).isoformat())  # "+00:00": "+" is a space
    return [
        ("search address now", f"/console/search?q={address(middle)}"),
        ("search address at time", f"/console/search?q={address(middle)}&at={held_at}"),
        ("account page", f"/console/accounts/acct{middle}"),
        ("quarantines, active", "/console/quarantines"),
        ("quarantines, deep page", f"/console/quarantines?page={max(1, accounts // 100)}"),
        ("quarantines, mode+actor", "/console/quarantines?mode=block&actor=token:analyst-2"),
        ("quarantines, ticket", "/console/quarantines?ticket=T-1"),
        ("offenders", "/console/offenders"),
        ("offenders, kind+gateway", "/console/offenders?kind=op25b&gateway=rep3"),
        ("gateways", "/console/gateways"),
        ("gateways, refresh fragment", "/console/gateways?fragment=1"),
        ("audit, newest", "/console/audit"),
        ("audit, actor", "/console/audit?actor=token:person-7"),
        ("audit, action", "/console/audit?action=token.create"),
        ("audit, object", f"/console/audit?object_type=account&object_id=acct{middle}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reduced", action="store_true", help="10k / 100k / 1k: a quick run")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    scale = 10 if args.reduced else 1
    quarantines, audit_rows, per_gateway = 100_000 // scale, 1_000_000 // scale, 1_000 // scale
    with database() as (path, store):
        started = time.perf_counter()
        seed_world(store)
        seed_accounts(store, quarantines)
        seed_quarantines(store, quarantines)
        seed_offenders(store, per_gateway)
        # The holds already wrote one audit entry each; the rest up to the target.
        with store.read() as connection:
            have = connection.execute(sa.select(sa.func.count()).select_from(t.audit)).scalar_one()
        seed_audit(store, max(0, audit_rows - int(have)), quarantines)
        seeded = time.perf_counter() - started
        with store.read() as connection:
            audit_total = connection.execute(
                sa.select(sa.func.count()).select_from(t.audit)
            ).scalar_one()
        secret = token(store, Role.ABUSE)
        store.close()
        results: dict[str, list[float]] = {}
        with controller(path) as (base, _pid), httpx.Client(base_url=base, timeout=60) as http:
            sign_in(http, secret)
            for name, url in pages(quarantines):
                response = http.get(url)  # warm: first-use template compile, page cache
                assert response.status_code == 200, (
                    name,
                    response.status_code,
                    response.text[:300],
                )
            for _ in range(args.rounds):  # interleaved: no page gets a quieter moment
                for name, url in pages(quarantines):
                    started = time.perf_counter()
                    response = http.get(url)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert response.status_code == 200, (name, response.status_code)
                    results.setdefault(name, []).append(elapsed)
    print(
        f"console pages, SQLite: {quarantines:,} quarantines, {audit_total:,} audit entries, "
        f"{REPORTERS * per_gateway:,} offenders (seeded in {seeded:.0f} s)"
    )
    print(f"  {'page':28} {'median ms':>10} {'max ms':>8}")
    for name, times in results.items():
        print(f"  {name:28} {statistics.median(times):10.1f} {max(times):8.1f}")
    worst = max(results, key=lambda n: statistics.median(results[n]))
    medians = [statistics.median(v) for v in results.values()]
    value = max(medians)
    print(f"  slowest page: {worst}")
    command = ".venv/bin/python bench/console_pages.py" + (" --reduced" if args.reduced else "")
    emit(
        Row(
            key="console_pages_reduced" if args.reduced else "console_pages",
            target=f"every console page < {TARGET_MS:g} ms with {quarantines:,} quarantines, "
            f"{audit_total:,} audit entries, {REPORTERS * per_gateway:,} offenders",
            value=value,
            low=min(min(v) for v in results.values()),
            high=max(max(v) for v in results.values()),
            unit=f"ms (slowest page's median: {worst})",
            clock="GET of a console page over HTTP on 127.0.0.1, signed in, body received",
            runs=args.rounds,
            met=value < TARGET_MS,
            command=f"{command} --rounds {args.rounds}",
        )
    )


if __name__ == "__main__":
    main()
