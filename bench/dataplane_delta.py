#!/usr/bin/env python3
"""One quarantine added and lifted as a delta, on gateways holding 10k, 100k and 1M keys.

Run as root: ``.venv/bin/python bench/dataplane_delta.py [--sizes 10000,100000,1000000]``.

For each size: a fresh namespace ``ectl-bench-<hex>-delta-<size>`` gets the
full state (bench/_common.py ``build_state``) by ``Dataplane.full_sync``;
then ``--deltas`` deltas alternate between adding a quarantine for a new key
and lifting it again, each timed around ``Dataplane.apply_delta`` (render +
one libnftables transaction on a handle kept open).  The baseline, in the
same namespace: ``nft add element`` / ``nft delete element`` of one key by
spawning ``nft`` (directly inside the namespace: the child inherits the
namespace of the thread that forks it, so no ``ip netns exec`` overhead).

The deltas are built the way ``diff`` builds them (checked against
``diff(old, new)`` once per size); the states share one mutable dict so the
harness does not copy a million entries per delta.  ``diff`` and ``patch``
of two full states are timed separately: they are O(keys) Python work.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (
    BENCH_BASE,
    FIXED_NOW,
    Layout,
    build_state,
    fmt_ms,
    fmt_s,
    install_signal_handlers,
    key_values,
    machine,
    median,
    namespace,
    peak_rss_mib,
    percentile,
    print_table,
    run_id,
)

from edgectl.agent.apply import Dataplane
from edgectl.agent.netlink.codec import decode_error, encode_message, nla, nla_nested, nla_str
from edgectl.agent.netlink.constants import (
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NFT_MSG_NEWSETELEM,
    NFTA_DATA_VALUE,
    NFTA_LIST_ELEM,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
)
from edgectl.agent.netlink.nfsocket import NetlinkError, NfNetlink
from edgectl.agent.netns import inside
from edgectl.agent.nft import Nft, NftError
from edgectl.agent.persist import StateStore, Step
from edgectl.agent.render import render_delta
from edgectl.model.delta import KeyedChanges, StateDelta, diff, patch
from edgectl.model.policy import Quarantine, QuarantineMode
from edgectl.model.prefix import Prefix

SET = "q_smtp_4"
NFT_SPAWN_TIMEOUT_S = 60.0
RAW_ACK_TIMEOUT_S = 5.0

# <linux/netfilter/nfnetlink.h>, <linux/netfilter/nf_tables.h>: what the
# prototype needs beyond edgectl/agent/kernel_readback.py.
NFNL_MSG_BATCH_BEGIN = 16
NFNL_MSG_BATCH_END = 17
NFT_MSG_DELSETELEM = 14
NFTA_SET_ELEM_TIMEOUT = 4
NLM_F_CREATE = 0x400


def _batch_marker(msg_type: int, seq: int) -> bytes:
    # nfgenmsg of a batch marker: AF_UNSPEC, v0, res_id = NFNL_SUBSYS_NFTABLES (be16).
    body = struct.pack("=BB", 0, 0) + struct.pack(">H", NFNL_SUBSYS_NFTABLES)
    return struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST, seq, 0) + body


def raw_element_batch(sock: NfNetlink, ops: list[tuple[int, str, bytes, int | None]]) -> None:
    """PROTOTYPE: element adds/deletes as one nf_tables batch over raw nfnetlink.

    ``ops``: (NFT_MSG_NEWSETELEM or NFT_MSG_DELSETELEM, set, key bytes,
    timeout ms or None).  One transaction, all or nothing, like the nft
    script - but without libnftables' cache refresh, which in nft 1.0.6
    dumps every interval set's elements before any ``add element``.
    """
    parts = [_batch_marker(NFNL_MSG_BATCH_BEGIN, sock.next_seq())]
    pending = set()
    for msg, set_name, key, timeout_ms in ops:
        element = nla_nested(NFTA_SET_ELEM_KEY, nla(NFTA_DATA_VALUE, key))
        if timeout_ms is not None:
            element += nla(NFTA_SET_ELEM_TIMEOUT, struct.pack(">Q", timeout_ms))
        attrs = (
            nla_str(NFTA_SET_ELEM_LIST_TABLE, "edgectl")
            + nla_str(NFTA_SET_ELEM_LIST_SET, set_name)
            + nla_nested(NFTA_SET_ELEM_LIST_ELEMENTS, nla_nested(NFTA_LIST_ELEM, element))
        )
        flags = NLM_F_REQUEST | NLM_F_ACK
        if msg == NFT_MSG_NEWSETELEM:
            flags |= NLM_F_CREATE
        seq = sock.next_seq()
        pending.add(seq)
        parts.append(encode_message(msg, flags, seq, NFPROTO_INET, attrs))
    parts.append(_batch_marker(NFNL_MSG_BATCH_END, sock.next_seq()))
    sock.send(b"".join(parts))
    deadline = time.monotonic() + RAW_ACK_TIMEOUT_S
    while pending:
        if not select.select([sock.fileno()], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError("no ack for the raw element batch")
        for message in sock.recv() or []:
            if message.type == NLMSG_ERROR and message.seq in pending:
                code, text = decode_error(message)
                if code:
                    raise NetlinkError(code, text or "element batch refused")
                pending.discard(message.seq)


def _present(nft: Nft, address: str) -> bool:
    """Is ``address`` in q_smtp_4?  A dry-run delete fails iff it is not: O(1), no listing."""
    try:
        nft.run(f"delete element inet edgectl {SET} {{ {address} }}\n", dry_run=True)
    except NftError:
        return False
    return True


def _spawn_nft(ns: str, command: str) -> float:
    with inside(ns):
        start = time.perf_counter()
        subprocess.run(
            ["nft", command], check=True, capture_output=True, timeout=NFT_SPAWN_TIMEOUT_S
        )
        return time.perf_counter() - start


def measure(size: int, args: argparse.Namespace, tag: str) -> dict[str, object]:
    state = build_state(size, pool_prefixes=args.pool_prefixes, revision=1)
    v4_in_state = size - int(size * 0.05)
    layout = Layout.of(args.pool_prefixes)
    fresh = [
        Prefix(4, value, 32)
        for i, value in enumerate(key_values(layout, v4_in_state + args.deltas))
        if i >= v4_in_state
    ]
    assert not any(key in state.quarantines or key in state.exemptions for key in fresh)
    result: dict[str, object] = {"size": size}
    with namespace(f"{BENCH_BASE}-{tag}-delta-{size}") as ns, Dataplane(ns) as dataplane:
        result["full_sync"] = dataplane.full_sync(state, now=FIXED_NOW).seconds

        # diff/patch of whole states: what an agent pays if it computes the
        # delta itself instead of receiving it from the controller.
        quarantines = dict(state.quarantines)
        quarantines[fresh[0]] = Quarantine(fresh[0], QuarantineMode.SMTP)
        bigger = dataclasses.replace(state, revision=2, quarantines=quarantines)
        diff_times, patch_times = [], []
        for _ in range(3):
            start = time.perf_counter()
            reference = diff(state, bigger)
            diff_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            patch(state, reference)
            patch_times.append(time.perf_counter() - start)
        result["diff"], result["patch"] = median(diff_times), median(patch_times)
        # What the agent daemon also does: a snapshot after a full sync (and
        # when the journal outgrows it), per applied delta a journal append
        # (persist.py), and at start-up: load the snapshot and replay.
        with tempfile.TemporaryDirectory(prefix="ectl-bench-") as directory:
            store = StateStore(Path(directory))
            start = time.perf_counter()
            store.save(state, None)
            result["save"] = time.perf_counter() - start
            appends = []
            step, target = reference, bigger
            for _ in range(5):
                start = time.perf_counter()
                store.record([Step(step, None)], target)
                appends.append(time.perf_counter() - start)
                # The same upsert again as the next revision: one more line.
                step = dataclasses.replace(
                    step, from_revision=step.to_revision, to_revision=step.to_revision + 1
                )
                target = dataclasses.replace(target, revision=step.to_revision)
            result["append"] = median(appends)
            start = time.perf_counter()
            store.load()
            result["load"] = time.perf_counter() - start
        del quarantines, bigger
        gc.collect()

        # One mutable dict behind every revision: the delta only reads
        # ``old`` for the entry being lifted or replaced.
        live = dict(state.quarantines)
        current = dataclasses.replace(state, quarantines=live)
        revision = 1
        adds: list[float] = []
        lifts: list[float] = []
        render_only: list[float] = []
        gc.disable()  # a collection pass over 1M objects would land in one sample
        try:
            for i in range(args.deltas):
                key = fresh[i // 2]
                adding = i % 2 == 0
                changes: KeyedChanges[Quarantine]
                if adding:
                    changes = KeyedChanges(upserts=(Quarantine(key, QuarantineMode.SMTP),))
                else:
                    changes = KeyedChanges(removals=(key,))
                delta = StateDelta(current.gateway, revision, revision + 1, quarantines=changes)
                if i == 0:
                    new = patch(current, delta)
                    assert diff(current, new) == delta, "harness delta differs from diff()"
                start = time.perf_counter()
                dataplane.apply_delta(current, delta, now=FIXED_NOW)
                (adds if adding else lifts).append(time.perf_counter() - start)
                start = time.perf_counter()
                render_delta(current, delta, FIXED_NOW)
                render_only.append(time.perf_counter() - start)
                if adding:
                    live[key] = changes.upserts[0]
                else:
                    del live[key]
                revision += 1
                current = dataclasses.replace(current, revision=revision)
                if i < 2:
                    present = _present(dataplane.nft, key.address)
                    assert present == adding, f"delta {i} not in the kernel"
        finally:
            gc.enable()
        result["edgectl_add"], result["edgectl_lift"] = adds, lifts

        # The same deltas (add, delete, add / add, delete) over raw nfnetlink.
        with inside(ns):
            sock = NfNetlink()
        raw: list[float] = []
        try:
            for i in range(args.deltas):
                key_bytes = socket.inet_aton(fresh[i // 2].address)
                ops: list[tuple[int, str, bytes, int | None]] = [
                    (NFT_MSG_NEWSETELEM, SET, key_bytes, None),
                    (NFT_MSG_DELSETELEM, SET, key_bytes, None),
                ]
                if i % 2 == 0:
                    ops.append((NFT_MSG_NEWSETELEM, SET, key_bytes, None))
                start = time.perf_counter()
                raw_element_batch(sock, ops)
                raw.append(time.perf_counter() - start)
                if i < 2:
                    want = i % 2 == 0
                    present = _present(dataplane.nft, fresh[0].address)
                    assert present == want, f"raw delta {i} not applied"
        finally:
            sock.close()
        result["raw"] = raw
        result["render_delta"] = render_only

        cli_add: list[float] = []
        cli_del: list[float] = []
        for i in range(args.cli_deltas):
            address = fresh[i // 2].address
            if i % 2 == 0:
                cli_add.append(_spawn_nft(ns, f"add element inet edgectl {SET} {{ {address} }}"))
            else:
                cli_del.append(_spawn_nft(ns, f"delete element inet edgectl {SET} {{ {address} }}"))
        result["cli_add"], result["cli_del"] = cli_add, cli_del
    return result


def cache_probe(tag: str, counts: list[int], samples: int = 30) -> list[list[object]]:
    """Why a delta costs what it costs with nft 1.0.6: its cache refresh.

    Before any ``add element`` libnftables dumps the elements of every
    interval set in the namespace (NFT_CACHE_SETELEM_MAYBE), in any table.
    Here: one element added to a small hash set of ``table inet probe``
    while ``table inet other`` holds an interval set of N /24s.
    """
    rows: list[list[object]] = []
    for count in counts:
        with namespace(f"{BENCH_BASE}-{tag}-probe-{count}") as ns, Nft(ns) as nft:
            nft.run("table inet probe { set q { type ipv4_addr; flags timeout; }; }\n")
            if count:
                prefixes = ", ".join(
                    socket.inet_ntoa((0x0A000000 + (i << 8)).to_bytes(4, "big")) + "/24"
                    for i in range(count)
                )
                nft.run(
                    "table inet other { set p { type ipv4_addr; flags interval; "
                    f"elements = {{ {prefixes} }}; }}; }}\n"
                )
            times = []
            for i in range(samples):
                address = socket.inet_ntoa((0xC6336400 + i).to_bytes(4, "big"))
                start = time.perf_counter()
                nft.run(f"add element inet probe q {{ {address} }}\n")
                times.append(time.perf_counter() - start)
            rows.append([f"{count:,}", fmt_ms(median(times)), fmt_ms(percentile(times, 90))])
    return rows


def _context_row(r: dict[str, object]) -> list[object]:
    seconds = {k: v for k, v in r.items() if isinstance(v, float)}
    return [
        f"{r['size']:,}",
        fmt_s(seconds["full_sync"]),
        fmt_ms(seconds["diff"]),
        fmt_ms(seconds["patch"]),
        fmt_s(seconds["save"]),
        fmt_ms(seconds["append"]),
        fmt_s(seconds["load"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--pool-prefixes", type=int, default=5000)
    parser.add_argument("--deltas", type=int, default=200, help="edgectl deltas per size")
    parser.add_argument("--cli-deltas", type=int, default=50, help="nft spawns per size")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument(
        "--probe-counts",
        default="0,1000,5000,20000",
        help="interval elements in another table for the libnftables cache probe ('' skips)",
    )
    args = parser.parse_args()
    if args.deltas < 2 or args.deltas % 2 or args.cli_deltas < 2 or args.cli_deltas % 2:
        parser.error("--deltas and --cli-deltas must be even and >= 2")
    args.cli_deltas = min(args.cli_deltas, args.deltas)
    install_signal_handlers()
    started = time.monotonic()
    print("# dataplane_delta")
    print(f"machine: {machine()}")
    tag = run_id()
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        if time.monotonic() - started > args.max_seconds:
            print(f"time budget reached; skipping {size:,}")
            continue
        results.append(measure(size, args, tag))
        gc.collect()
        print(f"  {size:,} keys done", flush=True)

    rows: list[list[object]] = []
    for r in results:
        adds: list[float] = r["edgectl_add"]  # type: ignore[assignment]
        lifts: list[float] = r["edgectl_lift"]  # type: ignore[assignment]
        both = adds + lifts
        renders: list[float] = r["render_delta"]  # type: ignore[assignment]
        cli_add: list[float] = r["cli_add"]  # type: ignore[assignment]
        cli_del: list[float] = r["cli_del"]  # type: ignore[assignment]
        cli = cli_add + cli_del
        raw: list[float] = r["raw"]  # type: ignore[assignment]
        rows.append(
            [
                f"{r['size']:,}",
                f"{fmt_ms(median(adds))} / {fmt_ms(percentile(adds, 90))}",
                f"{fmt_ms(median(lifts))} / {fmt_ms(percentile(lifts, 90))}",
                f"{fmt_ms(median(both))} / {fmt_ms(percentile(both, 90))}",
                fmt_ms(median(renders)),
                f"{fmt_ms(median(raw))} / {fmt_ms(percentile(raw, 90))}",
                f"{fmt_ms(median(cli_add))} / {fmt_ms(percentile(cli_add, 90))}",
                f"{fmt_ms(median(cli_del))} / {fmt_ms(percentile(cli_del, 90))}",
                f"{median(cli) / median(both):.1f}x",
            ]
        )
    n = args.deltas // 2
    print_table(
        f"One-key delta, median / p90 (edgectl: {n} adds + {n} lifts per size; "
        f"nft spawn: {args.cli_deltas // 2} + {args.cli_deltas // 2}); target median < 2 ms, flat",
        [
            "keys held",
            "edgectl add",
            "edgectl lift",
            "edgectl all",
            "render_delta alone",
            "PROTOTYPE raw nfnetlink batch",
            "spawn nft add element",
            "spawn nft delete element",
            "spawn / edgectl",
        ],
        rows,
    )
    print_table(
        "Context per size (single runs; diff/patch: median of 3)",
        [
            "keys held",
            "initial full_sync",
            "diff(old, new) of full states",
            "patch(old, delta)",
            "StateStore.save (snapshot)",
            "journal append (per daemon delta)",
            "StateStore.load (start-up)",
        ],
        [_context_row(r) for r in results],
    )
    if args.probe_counts:
        print_table(
            "libnftables add element of 1 key to a small hash set vs interval elements "
            "held by ANOTHER table in the namespace (30 samples)",
            ["interval elements elsewhere", "median", "p90"],
            cache_probe(tag, [int(c) for c in args.probe_counts.split(",")]),
        )
    print(f"\npeak RSS of this process: {peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
