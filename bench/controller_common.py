"""Shared set-up for the controller benchmarks: a seeded SQLite store and a
controller process on 127.0.0.1 (never anything else)."""

from __future__ import annotations

import ipaddress
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from edgectl.controller.auth import Role
from edgectl.controller.store import Store, bulk_holds, gateways, holds, tokens
from edgectl.controller.store.catalog import create_pool
from edgectl.controller.store.subscribers import Binding, bind_many
from edgectl.model import GatewaySettings, Pool, PoolKind, Prefix, QuarantineMode
from edgectl.testing.processes import free_port, serving

ENTRY = ["-m", "edgectl.controller"]  # the controller commands, as `edgectl` runs them
BASE = int(ipaddress.IPv4Address("100.64.0.0"))


def address(index: int) -> Prefix:
    return Prefix(4, BASE + 1 + index, 32)


@contextmanager
def database() -> Iterator[tuple[Path, Store]]:
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as root:
        path = Path(root) / "controller.db"
        store = Store.open(f"sqlite:///{path}")
        try:
            yield path, store
        finally:
            store.close()


def seed_world(store: Store) -> int:
    """One /10 dynamic pool served by gateway gw; returns the gateway id."""
    create_pool(store, "bench", Pool("dyn", PoolKind.DYNAMIC, (Prefix.parse("100.64.0.0/10"),)))
    gateways.create_gateway(store, "bench", gateways.GatewaySpec("gw", GatewaySettings(), ("dyn",)))
    return gateways.gateway_id(store, "gw")


def seed_accounts(store: Store, count: int, *, start: int = 0, batch: int = 10_000) -> None:
    for first in range(start, start + count, batch):
        last = min(first + batch, start + count)
        bind_many(store, "bench", [Binding(f"acct{i}", address(i)) for i in range(first, last)])


def seed_quarantines(store: Store, first: int, count: int, batch: int = 20_000) -> None:
    spec = holds.QuarantineSpec(QuarantineMode.SMTP, "bench", account="bulk", ticket="BENCH")
    for start in range(first, first + count, batch):
        accounts = [f"acct{i}" for i in range(start, min(start + batch, first + count))]
        bulk_holds.quarantine_accounts(store, "bench", accounts, spec)


def settle_store(store: Store, path: Path) -> None:
    """Close a freshly seeded store and put it on disk before anything is timed.

    Closing checkpoints the seeding's WAL into the database file (a running
    controller's sweeper would have long since); the fsync then writes those
    hundreds of MB out now, not under the first timed commits' fsyncs.
    """
    store.close()
    for name in (path, path.with_name(path.name + "-wal")):
        if name.exists():
            fd = os.open(name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def token(store: Store, role: Role) -> str:
    return tokens.create(store, f"bench-{role.value}-{time.monotonic_ns()}", role)


@contextmanager
def controller(
    database: Path | str, config: Path | None = None, *, log: Path | None = None
) -> Iterator[tuple[str, int]]:
    """Serve ``database`` (a SQLite file, or a URL) from a separate process;
    yields (base URL, pid).  ``config``: a settings file for what the
    environment does not set (the RADIUS feed's table).  ``log``: where its
    output goes (default: beside a SQLite file)."""
    if log is None:
        if isinstance(database, str):
            raise ValueError("a database URL needs log=")
        log = database.parent / "controller.log"
    port = free_port()
    env = {
        "EDGECTL_CONTROLLER_DATABASE_URL": (
            database if isinstance(database, str) else f"sqlite:///{database}"
        ),
        "EDGECTL_CONTROLLER_HOST": "127.0.0.1",
        "EDGECTL_CONTROLLER_PORT": str(port),
        "EDGECTL_CONTROLLER_LOG_LEVEL": "warning",
        "EDGECTL_CONTROLLER_CONFIG": "" if config is None else str(config),
    }
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, *ENTRY, "controller"]
    with serving(argv, base, log=log, env=env) as server:
        yield base, server.pid


def netops_client(stack: ExitStack, path: Path, store: Store) -> httpx.Client:
    """Settle the seeded store at ``path``, serve it, and a client holding a
    netops token (netops may create, lift and move) for as long as ``stack``."""
    netops = token(store, Role.NETOPS)
    settle_store(store, path)
    base, _ = stack.enter_context(controller(path))
    headers = {"Authorization": f"Bearer {netops}"}
    return stack.enter_context(httpx.Client(base_url=base, headers=headers, timeout=60))


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set, from the kernel."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
