#!/usr/bin/env python3
"""Measure raw-nfnetlink readback against nft with a 1M-element hash set.

Run as root: ``.venv/bin/python bench/readback.py [--elements N] [--keys K]``.

It creates its own namespace ``ectl-rb-<hex>``, loads ``table inet edgectl``
with one hash set of N IPv4 elements (one ``elements = { ... }`` list, a few
seconds for 1M), then times, inside that namespace only:

* ``read_table`` (chain/set/rule/counter dumps; no elements),
* ``generation``,
* ``missing_elements`` for K keys (half present, half absent) at several
  pipeline windows,
* ``nft get element`` of one key and ``nft list counters`` for comparison.

The namespace is deleted on exit, including on error or SIGTERM/SIGINT, and
every nft call has a timeout, so a run is bounded.  Prints figures; asserts
only that the answers are right.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import ipaddress
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _results import Row, emit

from edgectl.agent.kernel_readback import generation, missing_elements, read_table
from edgectl.agent.netlink.constants import NFPROTO_INET
from edgectl.agent.netlink.nfsocket import NfNetlink

CLONE_NEWNET = 0x40000000
NFT_TIMEOUT_S = 300.0  # nft get element with 1M elements takes ~16 s; 300 s is "broken"
BASE = int(ipaddress.IPv4Address("10.0.0.0"))

_T = TypeVar("_T")


def open_in_netns(name: str) -> NfNetlink:
    """Open the socket from a throwaway thread that entered the namespace.

    setns(2) switches only the calling thread and a socket keeps the
    namespace it was created in, so the main thread never leaves the root
    namespace.  Python 3.11 has no os.setns, hence ctypes.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[NfNetlink] = []
    failure: list[BaseException] = []

    def enter_and_open() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            result.append(NfNetlink())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=enter_and_open)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def timed(fn: Callable[[], _T], repeat: int) -> tuple[list[float], _T]:
    times: list[float] = []
    value: _T | None = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    assert value is not None
    return times, value


def fmt(times: list[float]) -> str:
    med = statistics.median(times)
    return f"median {med * 1e3:9.2f} ms  (min {min(times) * 1e3:.2f}, n={len(times)})"


def nft(ns: str, *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=NFT_TIMEOUT_S,
    )
    return time.perf_counter() - t0


def write_ruleset(path: Path, n: int) -> None:
    with path.open("w") as f:
        f.write("table inet edgectl {\n  counter quarantined { }\n")
        f.write("  set quar4 {\n    type ipv4_addr; flags timeout;\n    elements = { ")
        f.write(", ".join(str(ipaddress.IPv4Address(BASE + i)) for i in range(n)))
        f.write(" }\n  }\n")
        f.write(
            "  chain forward {\n    type filter hook forward priority filter; policy accept;\n"
            '    ip saddr @quar4 counter name quarantined drop comment "quarantine"\n  }\n}\n'
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="one pipeline window (256), no nft list/get (~45 s at 1M)",
    )
    parser.add_argument(
        "--nft-list", action="store_true", help="also time `nft -t list table` (another ~16 s)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (ip netns)", file=sys.stderr)
        return 2

    # Turn SIGTERM into SystemExit so the finally below removes the namespace.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ns = f"ectl-rb-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    sock: NfNetlink | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "big.nft"
            t0 = time.perf_counter()
            write_ruleset(script, args.elements)
            print(f"wrote {args.elements:,} elements in {time.perf_counter() - t0:.2f} s")
            print(f"nft -f load:                    {nft(ns, '-f', str(script)):9.2f} s")

        sock = open_in_netns(ns)
        s = sock
        print(f"SO_RCVBUF (effective):          {s.rcvbuf:,} bytes")

        times, gen = timed(lambda: generation(s), args.repeat * 4)
        print(f"generation ({gen}):               {fmt(times)}")

        structure, layout = timed(lambda: read_table(s, NFPROTO_INET, "edgectl"), args.repeat)
        assert layout is not None and "quar4" in layout.sets
        print(f"read_table:                     {fmt(structure)}")

        half = args.keys // 2
        present = [BASE + (i * 997) % args.elements for i in range(half)]
        absent = [int(ipaddress.IPv4Address("172.16.0.0")) + i for i in range(args.keys - half)]
        keys = [a.to_bytes(4, "big") for pair in zip(present, absent, strict=True) for a in pair]
        expected = [a.to_bytes(4, "big") for a in absent]
        probed: list[float] = []
        for window in (256,) if args.reduced else (1, 16, 64, 256, 1024):
            times, missing = timed(
                functools.partial(
                    missing_elements, s, NFPROTO_INET, "edgectl", "quar4", keys, window=window
                ),
                args.repeat,
            )
            assert missing == expected, "wrong answer"
            if window == 256:
                probed = times
            per_key = statistics.median(times) / len(keys) * 1e6
            print(
                f"missing_elements {len(keys)} keys, window {window:4}: {fmt(times)}"
                f"  = {per_key:.1f} us/key"
            )

        emit(
            Row(
                key="readback_structure",
                target=f"read-back of a {args.elements:,}-element table without listing it",
                value=statistics.median(structure) * 1e3,
                low=min(structure) * 1e3,
                high=max(structure) * 1e3,
                unit=(
                    f"ms for the structure; {len(keys):,} keys probed in "
                    f"{statistics.median(probed) * 1e3:.1f} ms"
                ),
                clock="read_table netlink dumps (chains, sets, rules, counters), no elements",
                runs=len(structure),
                met=None,
                command=(
                    f".venv/bin/python bench/readback.py --elements {args.elements} "
                    f"--keys {args.keys} --repeat {args.repeat}"
                    + (" --reduced" if args.reduced else "")
                ),
            )
        )
        if args.reduced:
            return 0
        print(f"nft list counters:              {nft(ns, 'list', 'counters') * 1e3:9.2f} ms")
        first = str(ipaddress.IPv4Address(BASE))
        t = nft(ns, "get", "element", "inet", "edgectl", "quar4", "{", first, "}")
        print(f"nft get element (1 key):        {t:9.2f} s")
        if args.nft_list:
            t = nft(ns, "-t", "list", "table", "inet", "edgectl")
            print(f"nft -t list table:              {t:9.2f} s")
    finally:
        if sock is not None:
            sock.close()
        subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=60)
        print(f"deleted namespace {ns}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
