"""Shared helpers of the dataplane benchmarks (sync, delta, forwarding).

* Own network namespaces only: ``ectl-bench-<hex>-<what>``, created with
  ``ip netns add`` and deleted in ``finally`` (and on SIGTERM/SIGINT/SIGHUP,
  which are turned into exceptions so the ``finally`` runs).  Nothing here
  touches the root namespace's ruleset, routes or addresses.
* A synthetic gateway state of N subscriber keys over 5,000 pool /24s in
  100.64.0.0/10 (plus IPv6 /56 keys in 2001:db8:1000::/40), laid out so the
  lab's standard topology hosts (dyn4 100.64.0.10-12, static4 100.65.0.10)
  sit in a dynamic and a rate-limited static pool and are never keys.
* The "hand-written" equivalent script an operator would load with
  ``nft -f``: one set per kind holding the same elements, no edgectl chains.
* Statistics and table printing.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgectl.model.policy import (
    DesiredState,
    Exemption,
    GatewaySettings,
    Pool,
    PoolKind,
    Quarantine,
    QuarantineMode,
    RateLimitProfile,
    Relay,
)
from edgectl.model.prefix import Prefix

BENCH_BASE = "ectl-bench"
CMD_TIMEOUT_S = 600.0  # one nft/ip call; 1M elements load in ~5 s, so this is "broken"

# 100.64.0.0/10 as /24 indices 0..16383; index 256 is 100.65.0.0/24.
CGNAT = 0x64400000
STATIC_FIRST_INDEX = 256
# Addresses of the lab's standard topology: never keys (they must pass).
LAB_CLIENTS = frozenset(
    int.from_bytes(socket.inet_aton(a), "big")
    for a in ("100.64.0.10", "100.64.0.11", "100.64.0.12", "100.65.0.10")
)
DYN6 = Prefix.parse("2001:db8:1000::/40")
STATIC6 = Prefix.parse("2001:db8:2000::/40")
DYN6_LAB_SLOTS = frozenset({1, 2})  # 2001:db8:1000:100::/56 and :200::/56 (dyn6 host)
FIXED_NOW = datetime(2026, 1, 1, tzinfo=UTC)


# -- namespaces ----------------------------------------------------------


def run_id() -> str:
    return secrets.token_hex(3)


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP behave like Ctrl-C, so every ``finally`` deletes its namespaces."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)


def run(cmd: Sequence[str], *, timeout: float = CMD_TIMEOUT_S, stdin: str | None = None) -> str:
    done = subprocess.run(
        list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed: {done.stderr.strip()[:500]}")
    return done.stdout


@contextmanager
def namespace(name: str) -> Iterator[str]:
    """A fresh named namespace (``ip netns add``), always deleted on exit."""
    if not name.startswith(f"{BENCH_BASE}-"):
        raise ValueError(f"bench namespaces are named {BENCH_BASE}-*: {name}")
    if os.path.exists(f"/run/netns/{name}"):
        raise FileExistsError(f"namespace {name} exists; not ours")
    run(["ip", "netns", "add", name], timeout=30)
    try:
        yield name
    finally:
        run(["ip", "netns", "del", name], timeout=60)


def settle(seconds: float = 1.0) -> None:
    """Let the kernel's deferred frees of a deleted namespace/table run before timing.

    A deleted 1M-element set is freed by a workqueue; timing the next load
    while it runs would charge that work to the wrong candidate.
    """
    time.sleep(seconds)


# -- the synthetic gateway state -------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Which /24 indices of 100.64.0.0/10 belong to which pool."""

    dyn_a: tuple[int, ...]
    dyn_b: tuple[int, ...]
    biz: tuple[int, ...]

    @classmethod
    def of(cls, pool_prefixes: int) -> Layout:
        if not 4 <= pool_prefixes <= 16384 - STATIC_FIRST_INDEX:
            raise ValueError("pool prefixes must be 4..16128")
        statics = max(1, pool_prefixes // 5)
        static = tuple(range(STATIC_FIRST_INDEX, STATIC_FIRST_INDEX + statics))
        others = [
            i for i in range(16384) if not STATIC_FIRST_INDEX <= i < STATIC_FIRST_INDEX + statics
        ]
        dynamic = others[: pool_prefixes - statics]
        half = len(dynamic) // 2
        return cls(tuple(dynamic[:half]), tuple(dynamic[half:]), static)

    def all_indices(self) -> list[int]:
        return [*self.dyn_a, *self.dyn_b, *self.biz]


def _slash24(index: int) -> Prefix:
    return Prefix(4, CGNAT + (index << 8), 24)


def profile(kind: str) -> RateLimitProfile:
    """A profile on the static pool that never triggers in a benchmark.

    ``full`` adds the ct-count meters too (concurrent and per destination):
    the longest path a packet can take through the table.
    """
    if kind == "full":
        return RateLimitProfile(
            "biz", 1_000_000, 1_000_000, concurrent=100_000, per_destination=100_000
        )
    if kind == "rate":
        return RateLimitProfile("biz", 1_000_000, 1_000_000)
    raise ValueError(f"profile kind {kind!r}: full or rate")


def key_values(layout: Layout, count: int) -> Iterator[int]:
    """``count`` distinct IPv4 /32s spread over every pool /24 (host-major).

    With few pool prefixes (``--pool-prefixes 100``) the keys that do not
    fit continue in the rest of 100.64.0.0/10: still subscriber space, just
    not in a pool, which the kernel sets do not care about.
    """
    pooled = layout.all_indices()
    in_pools = set(pooled)
    indices = pooled
    if count > len(pooled) * 253:
        indices = pooled + [i for i in range(16384) if i not in in_pools]
    produced = 0
    for host in range(2, 255):
        for index in indices:
            value = CGNAT + (index << 8) + host
            if value in LAB_CLIENTS:
                continue
            yield value
            produced += 1
            if produced == count:
                return
    raise ValueError(f"{count} keys do not fit in {len(indices)} /24s")


def build_state(
    keys: int,
    *,
    pool_prefixes: int = 5000,
    v6_fraction: float = 0.05,
    expiring_fraction: float = 0.25,
    profile_kind: str = "full",
    revision: int = 1,
) -> DesiredState:
    """A gateway state with ``keys`` quarantined/exempted subscriber keys.

    Keys by index i: 60 % smtp quarantine, 10 % walled garden, 10 % block,
    20 % exemption; every 1/expiring_fraction-th with an expiry a week out
    (so the kernel sets carry timeouts); ``v6_fraction`` of them IPv6 /56s.
    """
    layout = Layout.of(pool_prefixes)
    pools = (
        Pool("dyn_a", PoolKind.DYNAMIC, tuple(map(_slash24, layout.dyn_a))),
        Pool(
            "dyn_b",
            PoolKind.DYNAMIC,
            (*map(_slash24, layout.dyn_b), DYN6),
            subscriber_prefix_len=56,
        ),
        Pool(
            "biz",
            PoolKind.STATIC,
            (*map(_slash24, layout.biz), STATIC6),
            subscriber_prefix_len=56,
            rate_limit="biz",
        ),
        Pool(
            "infra",
            PoolKind.INFRASTRUCTURE,
            (Prefix.parse("198.51.100.0/24"), Prefix.parse("2001:db8:eeee::/48")),
        ),
    )
    settings = GatewaySettings(
        resolvers=(Prefix.parse("198.51.100.53"), Prefix.parse("2001:db8:eeee:53::53")),
        portal=(Prefix.parse("198.51.100.80"), Prefix.parse("2001:db8:eeee:80::80")),
    )
    relays = (Relay("relay", (Prefix.parse("198.51.100.25"), Prefix.parse("2001:db8:eeee::25"))),)
    v6_keys = int(keys * v6_fraction)
    if v6_keys > 65536 - len(DYN6_LAB_SLOTS):
        raise ValueError("at most 65,534 IPv6 /56 keys fit in the dyn6 /40")
    prefixes = [Prefix(4, v, 32) for v in key_values(layout, keys - v6_keys)]
    slots = (s for s in range(65536) if s not in DYN6_LAB_SLOTS)
    prefixes += [Prefix(6, DYN6.value | (next(slots) << 72), 56) for _ in range(v6_keys)]
    every = 0 if expiring_fraction <= 0 else max(1, round(1 / expiring_fraction))
    week = FIXED_NOW + timedelta(days=7)
    modes = [QuarantineMode.SMTP] * 12 + [QuarantineMode.WALLED_GARDEN] * 2
    modes += [QuarantineMode.BLOCK] * 2
    quarantines: dict[Prefix, Quarantine] = {}
    exemptions: dict[Prefix, Exemption] = {}
    for i, key in enumerate(prefixes):
        expires = week + timedelta(seconds=i % 86400) if every and i % every == 0 else None
        slot = i % 20
        if slot < 16:
            quarantines[key] = Quarantine(key, modes[slot], expires=expires)
        else:
            exemptions[key] = Exemption(key, expires=expires)
    return DesiredState(
        gateway="bench-gw",
        revision=revision,
        settings=settings,
        pools=pools,
        relays=relays,
        rate_limits=(profile(profile_kind),),
        quarantines=quarantines,
        exemptions=exemptions,
    )


# The IPv6 subscriber keys of build_state are /56s.
MASK56 = "ffff:ffff:ffff:ff00::"


def timeout_clause(expires: datetime | None) -> str:
    """`` timeout Ns`` for an element expiring at ``expires`` (seen from FIXED_NOW), or ""."""
    if expires is None:
        return ""
    return f" timeout {math.ceil((expires - FIXED_NOW).total_seconds())}s"


def held_elements(state: DesiredState) -> dict[str, list[str]]:
    """Held keys as hand-written element text, by set: ``q_<mode>_<v>`` and ``exempt_<v>``.

    Keys are IPv4 /32s and IPv6 /56s (the element is the address; rules
    mask IPv6 sources with MASK56), as build_state makes them.
    """
    sets: dict[str, list[str]] = {}
    named = [
        (f"q_{q.mode.value.replace('-', '_')}_{key.version}", key, q.expires)
        for key, q in state.quarantines.items()
    ]
    named += [(f"exempt_{key.version}", key, e.expires) for key, e in state.exemptions.items()]
    for name, key, expires in named:
        if key.length != (32 if key.version == 4 else 56):
            raise ValueError(f"{key}: hand-written sets hold IPv4 /32s and IPv6 /56s only")
        sets.setdefault(name, []).append(key.address + timeout_clause(expires))
    return sets


def key_set(name: str, elements: Sequence[str]) -> str:
    """A hand-written timeout hash set of addresses (the family from the name's _4/_6)."""
    addr = "ipv4_addr" if name.endswith("_4") else "ipv6_addr"
    return set_block(name, f"type {addr}; flags timeout;", elements)


def set_block(name: str, declaration: str, elements: Sequence[str]) -> str:
    out = [f"\tset {name} {{\n\t\t{declaration}"]
    if elements:
        out.append("\t\telements = { " + ",\n\t\t\t".join(elements) + " }")
    out.append("\t}")
    return "\n".join(out)


def handwritten_script(state: DesiredState, table: str = "inet edgectl") -> str:
    """What an operator would write by hand for the same elements.

    One plain set per kind and family: the pool prefixes as one interval
    set, the keys in hash sets (``flags timeout`` because some elements
    carry one, exactly as edgectl's sets do), one forward chain using them.
    No counters, no logging, no verdict maps, no per-pool chains.
    """
    out = [f"table {table} {{"]
    for name, version in (("pools_4", 4), ("pools_6", 6)):
        prefixes = [
            str(p)
            for pool in state.pools
            for p in pool.prefixes
            if p.version == version and pool.kind is not PoolKind.INFRASTRUCTURE
        ]
        addr = "ipv4_addr" if version == 4 else "ipv6_addr"
        out.append(set_block(name, f"type {addr}; flags interval;", prefixes))
    held = held_elements(state)
    out += [key_set(name, elements) for name, elements in held.items()]
    out.append("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;")
    out.append("\t\tct state established,related accept")
    for name in held:
        if name.startswith("q_"):
            family = "ip saddr" if name.endswith("_4") else f"ip6 saddr & {MASK56}"
            out.append(f"\t\t{family} @{name} drop")
    out.append("\t\ttcp dport 25 ip saddr @pools_4 ip saddr != @exempt_4 reject with tcp reset")
    out.append("\t}\n}")
    return "\n".join(out) + "\n"


# -- measuring and printing -------------------------------------------------


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set (ru_maxrss is KiB on Linux); RUSAGE_CHILDREN: the largest child."""
    return resource.getrusage(who).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, so the output pastes into BENCHMARKS.md as is."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n### {title}\n")

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


def machine() -> str:
    nft = run(["nft", "--version"], timeout=10).strip()
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().split()[:3]
    return (
        f"nproc {os.cpu_count()}, kernel {platform.release()}, {nft}, "
        f"Python {platform.python_version()}, loadavg {' '.join(load)}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"
