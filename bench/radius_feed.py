"""RADIUS accounting into the controller: sustained packets/s from many NAS, a
reconnect storm, and that nothing acknowledged is lost.

    .venv/bin/python bench/radius_feed.py             # 100k sustained, 50k storm, 3 runs each
    .venv/bin/python bench/radius_feed.py --reduced   # 20k sustained, 10k storm, 1 run
    .venv/bin/python bench/radius_feed.py --postgres  # the same into PostgreSQL (root)

A controller process on a fresh SQLite file (or, with --postgres, a fresh
database on a local PostgreSQL server with durable commits,
edgectl/testing/pgserver.py; one /10 dynamic pool, one gateway) listens for
accounting on 127.0.0.1; --nas senders, each from its own loopback address
(127.0.1.N, a client of its own in the clients file), send Acct-Start packets
for distinct accounts and addresses, like BNGs do:

* sustained: each NAS keeps --window requests outstanding and sends the next
  when one is answered (retransmitting after --retry seconds); the figure is
  acknowledged packets / wall time from the first send to the last answer.
  The default window is a NAS's whole Identifier space (256), so the figure
  is the controller's capacity: with 64 outstanding the controller idled
  between commits (8,400-9,400/s against 10,100/s with 256 at load ~1, 3 Dec
  2026), i.e. that run measured the senders' window, not the server;
* storm: every NAS sends its share of --storm Starts as fast as it can (a
  BNG reboot), as many in flight as its one Identifier space allows (256),
  retransmitting what is unanswered every --retry seconds; the figure is the
  time until the last one is answered.

An answer is only sent after the commit, so "answered" means "stored"; the
script then checks that for every acknowledged packet: its account holds its
address and has an open session from the NAS that sent it (read from the
database file directly, read-only, after the controller stopped:
``GET /v1/accounts/{a}`` would be 100k requests).  A reply counts only with a
valid Response Authenticator for the packet it answers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import resource
import selectors
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa
from _common import install_signal_handlers
from _results import Row, emit
from controller_common import address, controller, cpu_seconds, seed_world

from edgectl.controller.radius import codec
from edgectl.controller.store import Store
from edgectl.testing import pgserver
from edgectl.testing.processes import free_port

SECRET = "bench-secret-0123456789"


@dataclass
class Nas:
    """One NAS: its socket, its share of the packets, what is in flight and answered.

    Positions index ``packets``; a packet's Identifier is its position % 256, so at
    most 256 are in flight per NAS (one source port, one Identifier space, as a
    BNG's accounting client with one socket).
    """

    name: str
    sock: socket.socket
    first: int  # the global index (account, address, session) of packets[0]
    packets: list[bytes]
    next: int = 0  # position of the next packet to send
    outstanding: dict[int, tuple[int, float]] = field(default_factory=dict)  # id -> (pos, sent)
    acked: list[int] = field(default_factory=list)  # positions


def _packets(words: object, first: int, count: int) -> list[bytes]:
    packets = []
    for position in range(count):
        index = first + position
        attributes = {
            "Acct-Status-Type": "Start",
            "Acct-Session-Id": f"bench-{index}",
            "User-Name": f"acct{index}",
            "Framed-IP-Address": str(address(index)),
            "NAS-Port": index % 65536,
        }
        packets.append(codec.encode_request(SECRET.encode(), position % 256, attributes, words))
    return packets


def _answers(reply: bytes, request: bytes) -> bool:
    """RFC 2866 Response Authenticator check: a late answer to an earlier packet
    that had the same Identifier must not acknowledge this one."""
    if len(reply) < 20 or reply[0] != codec.ACCOUNTING_RESPONSE or reply[1] != request[1]:
        return False
    digest = hashlib.md5(reply[:4] + request[4:20] + reply[20:] + SECRET.encode()).digest()
    return digest == reply[4:20]


@contextmanager
def radius_controller(url: str, nas_count: int, work: Path) -> Iterator[tuple[int, int]]:
    """A controller serving ``url`` with the feed on 127.0.0.1; yields (radius port, pid)."""
    clients = work / "clients.toml"
    clients.write_text(
        "".join(
            f'[[client]]\nname = "nas-{n}"\naddress = "127.0.1.{n + 1}"\nsecret = "{SECRET}"\n'
            for n in range(nas_count)
        )
    )
    clients.chmod(0o600)
    radius_port = free_port(kind=socket.SOCK_DGRAM)
    config = work / "controller.toml"
    config.write_text(
        f'[controller.radius]\nlisten = "127.0.0.1:{radius_port}"\nclients = "{clients}"\n'
    )
    with controller(url, config, log=work / "controller.log") as (_, pid):
        yield radius_port, pid


def _senders(port: int, nas_count: int, total: int, words: object) -> list[Nas]:
    share = total // nas_count
    senders = []
    for n in range(nas_count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((f"127.0.1.{n + 1}", 0))
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        first = n * share
        senders.append(Nas(f"nas-{n}", sock, first, _packets(words, first, share)))
    return senders


def _drive(senders: list[Nas], window: int, retry: float, deadline: float) -> float:
    """Send with at most ``window`` outstanding per NAS until all are answered; seconds."""
    started = time.monotonic()
    resend_check = started
    with selectors.DefaultSelector() as selector:
        for nas in senders:
            selector.register(nas.sock, selectors.EVENT_READ, nas)
        while any(nas.next < len(nas.packets) or nas.outstanding for nas in senders):
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError("not every packet was answered in time")
            resend = now >= resend_check
            if resend:
                resend_check = now + 0.1
            for nas in senders:
                if resend:
                    for ident, (position, sent) in list(nas.outstanding.items()):
                        if now - sent > retry:  # the NAS's retransmission: same bytes
                            nas.outstanding[ident] = (position, now)
                            _send(nas, position)
                while nas.next < len(nas.packets) and len(nas.outstanding) < min(window, 256):
                    position = nas.next
                    if position % 256 in nas.outstanding:
                        break
                    nas.outstanding[position % 256] = (position, now)
                    nas.next += 1
                    _send(nas, position)
            for key, _ in selector.select(timeout=0.05):
                nas = key.data
                while True:
                    try:
                        reply = nas.sock.recv(4096)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    taken = nas.outstanding.get(reply[1]) if len(reply) >= 20 else None
                    if taken is not None and _answers(reply, nas.packets[taken[0]]):
                        del nas.outstanding[reply[1]]
                        nas.acked.append(taken[0])
    return time.monotonic() - started


def _send(nas: Nas, position: int) -> None:
    # A full socket buffer or an ICMP error from an earlier send: the datagram is
    # lost like one on a busy link, and retransmitted later.
    with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
        nas.sock.send(nas.packets[position])


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tree_cpu(pid: int) -> tuple[float, float]:
    """CPU of the controller (all threads) and of its child processes (a feed worker)."""
    children = 0.0
    for listed in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in listed.read_text().split():
                with contextlib.suppress(OSError):
                    children += cpu_seconds(int(child))
    return cpu_seconds(pid), children


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _verify(url: str, senders: list[Nas]) -> int:
    """Acknowledged Starts not in the store (0 is the only pass), read after the
    controller stopped: for every acknowledged packet, its account must hold its
    address now, and the account's session must be an open interval from the
    NAS that sent it."""
    store = Store.open(url, migrate=False)
    try:
        with store.read() as connection:
            bound = {
                ref: ipv4
                for ref, ipv4 in connection.execute(
                    sa.text(
                        "SELECT a.ref, s.ipv4 FROM sessions s "
                        "JOIN accounts a ON a.id = s.account_id"
                    )
                )
            }
            opened = {
                (ref, source, session, ipv4)
                for ref, source, session, ipv4 in connection.execute(
                    sa.text(
                        "SELECT a.ref, h.source, h.session_id, h.ipv4 FROM session_history h "
                        "JOIN accounts a ON a.id = h.account_id WHERE h.ended IS NULL"
                    )
                )
            }
            # One audit record per feed transaction: how well the commits batched.
            commits = connection.execute(
                sa.text("SELECT count(*) FROM audit_log WHERE action = 'session.feed'")
            ).scalar_one()
    finally:
        store.close()
    acked = sum(len(nas.acked) for nas in senders)
    print(f"  {commits} commits, {acked / max(1, commits):.0f} packets a commit", flush=True)
    missing = 0
    for nas in senders:
        for position in nas.acked:
            index = nas.first + position
            account, ipv4 = f"acct{index}", str(address(index).address)
            if (
                bound.get(account) != ipv4
                or (account, nas.name, f"bench-{index}", ipv4) not in opened
            ):
                missing += 1
    return missing


def _run(
    args: argparse.Namespace, url: str, total: int, window: int, work: Path
) -> tuple[float, int, int]:
    store = Store.open(url)
    try:
        seed_world(store)
    finally:
        store.close()
    words = codec.dictionary()
    with radius_controller(url, args.nas, work) as (port, pid):
        senders = _senders(port, args.nas, total, words)
        controller_before = _tree_cpu(pid)
        sender_before = _own_cpu()
        seconds = _drive(senders, window, args.retry, time.monotonic() + args.timeout)
        sender = _own_cpu() - sender_before
        after = _tree_cpu(pid)
        # A worker restarted during the run would make its CPU look negative: no such run.
        own, workers = (after[0] - controller_before[0], after[1] - controller_before[1])
        served = own + workers
    # The senders share the machine with the controller: if they were busy for
    # most of the wall time, the figure measures them, not the feed.
    print(
        f"  CPU during the run: senders {sender:.2f} s ({sender / seconds:.0%} of one core), "
        f"controller {served:.2f} s ({served / seconds:.0%}, "
        f"{served / max(1, total) * 1e6:.0f} us a packet, of which child processes "
        f"{workers / max(1, total) * 1e6:.0f} us); load {_load()}",
        flush=True,
    )
    acked = sum(len(nas.acked) for nas in senders)
    missing = _verify(url, senders)
    for nas in senders:
        nas.sock.close()
    return seconds, acked, missing


def main() -> int:
    install_signal_handlers()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reduced", action="store_true", help="small sizes, one run")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="into a fresh local PostgreSQL server (durable commits) instead of SQLite",
    )
    parser.add_argument("--nas", type=int, default=20)
    parser.add_argument("--sustained", type=int, default=None)
    parser.add_argument("--storm", type=int, default=None)
    parser.add_argument(
        "--window", type=int, default=256, help="outstanding requests per NAS (<= 256)"
    )
    parser.add_argument("--retry", type=float, default=3.0, help="retransmit after (s)")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    sustained = args.sustained or (20_000 if args.reduced else 100_000)
    storm = args.storm or (10_000 if args.reduced else 50_000)
    runs = args.runs or (1 if args.reduced else 3)
    command = " ".join([".venv/bin/python", "bench/radius_feed.py", *sys.argv[1:]])
    backend = "PostgreSQL" if args.postgres else "SQLite"

    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(pgserver.running(durable=True)) if args.postgres else None

        def database(name: str, work: Path) -> str:
            """A fresh database for one phase of one run."""
            if pg is None:
                return f"sqlite:///{work / 'controller.db'}"
            return pg.create_database(name)

        rates: list[float] = []
        storms: list[float] = []
        lost = 0
        for run in range(runs):
            with tempfile.TemporaryDirectory(prefix="edgectl-radius-") as root:
                url = database(f"sustained_{run}", Path(root))
                seconds, acked, missing = _run(args, url, sustained, args.window, Path(root))
                rates.append(acked / seconds)
                lost += missing
                print(
                    f"run {run}, {backend}: sustained {acked} Starts in {seconds:.2f} s = "
                    f"{acked / seconds:,.0f}/s, acknowledged but not stored: {missing}",
                    flush=True,
                )
            with tempfile.TemporaryDirectory(prefix="edgectl-radius-") as root:
                url = database(f"storm_{run}", Path(root))
                seconds, acked, missing = _run(args, url, storm, storm, Path(root))
                storms.append(seconds)
                lost += missing
                print(
                    f"run {run}, {backend}: storm of {acked} Starts all answered (= stored) "
                    f"in {seconds:.2f} s, acknowledged but not stored: {missing}",
                    flush=True,
                )
    pg_key = "_pg" if args.postgres else ""
    goal = 10_000 if not args.postgres else None  # the goal is SQLite's
    emit(
        Row(
            key=f"radius_sustained{pg_key}_{sustained // 1000}k",
            target=(
                f"accounting packets/s into {backend} from >= 20 NAS, none lost"
                + (" (>= 10,000)" if goal else " (reported)")
            ),
            value=statistics.median(rates),
            low=min(rates),
            high=max(rates),
            unit="packets/s",
            clock="first send to last Accounting-Response; answers only after commit",
            runs=runs,
            met=(
                (statistics.median(rates) >= goal and lost == 0 and args.nas >= 20)
                if goal
                else (None if lost == 0 else False)
            ),
            command=command,
        )
    )
    emit(
        Row(
            key=f"radius_storm{pg_key}_{storm // 1000}k",
            target=f"{storm:,} Acct-Starts at once into {backend}: time until all stored "
            "(reported)",
            value=statistics.median(storms),
            low=min(storms),
            high=max(storms),
            unit="s",
            clock="first send to last answer (answer = committed), NAS retransmits every "
            f"{args.retry:g} s",
            runs=runs,
            met=None if lost == 0 else False,
            command=command,
        )
    )
    print(f"acknowledged but not stored, all runs: {lost}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
