"""A fleet: two controller processes on one PostgreSQL, up to 1,000 long-polling agents.

    .venv/bin/python bench/fleet.py                          # 100 vs 1,000 agents, 7 rounds each
    .venv/bin/python bench/fleet.py --agents 50,300 --rounds 5 --wakeups 20   # reduced

Set-up: a throwaway PostgreSQL server with durable commits
(edgectl/testing/pgserver.py),
one dynamic pool (100.64.0.0/10) served by as many gateways as the largest
fleet, and two controller processes on 127.0.0.1 sharing the database
(``migrate_on_start = false``, LISTEN/NOTIFY between them), each counting
its SQL statements (bench/_fleet_controller.py, a SQLAlchemy event listener
in the bench's wrapper, not in the controller).

Agents are simulated in this process, one asyncio task and one kept-alive
TCP connection each, speaking the real protocol over plain HTTP/1.1: a
snapshot, then long-polls ``GET /v1/gateways/NAME/desired-state?since=R&
epoch=E&wait=30`` with the gateway's own agent token; each answer that
moves the revision is "applied" (parsed) and reported with ``POST
/v1/gateways/NAME/status`` before the next long-poll, as the real agent
does.  Even-numbered agents use controller A, odd ones B.  (The HTTP client
is hand-written on asyncio streams: an httpx request costs this process
about 1 ms of CPU, which at 1,000 agents would be the figure.)

Phases, each measured with the fleet parked (every agent's long-poll
counted on the controllers' ``edgectl_controller_long_polls_parked``):

* wake-up: one agent on each controller; ``--wakeups`` quarantines, written
  through A and B in turn.  Clock from just before the POST to each agent's
  answer: the agent on the writing controller (woken in-process at commit)
  and on the other one (woken by NOTIFY).  The cross-process wake-up is the
  difference, per write.
* fleet, for each size in ``--agents``: ``--rounds`` quarantines, written
  through A and B in turn, each reaching every gateway.  Propagation: clock
  from just before the POST to the last agent's status report returning
  (and p50/p99 over every agent and round).  Per change: SQL statements of
  both controllers by the route they served (the desired-state path, the
  POST, status reports; statements of timers are shown per second), their
  CPU.  Memory per parked agent: the controllers' resident memory
  with the largest fleet parked less with the smallest, per agent.

Prints medians with min-max over rounds, and BENCH-RESULT rows for
bench/summary.py.  Loops are bounded in count and time (every wait has a
deadline).  Run as any user; touches nothing outside its temporary files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import install_signal_handlers
from _results import Row, emit
from controller_common import address, cpu_seconds, percentile, seed_accounts, token

from edgectl.controller.auth import Role
from edgectl.controller.store import Store, gateways
from edgectl.controller.store.catalog import create_pool
from edgectl.model import GatewaySettings, Pool, PoolKind, Prefix
from edgectl.testing import pgserver
from edgectl.testing.processes import free_port

HERE = Path(__file__).resolve().parent
DEADLINE_S = 60.0  # any single wait (a round's propagation, parking) is "broken" past this
TARGET_PROPAGATION_S = 1.0
TARGET_WAKEUP_S = 0.050
TARGET_QUERY_GROWTH = 1.10  # desired-state statements per change, largest / smallest fleet


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


# -- controllers ---------------------------------------------------------------------


@dataclass
class Controller:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    queries_file: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def queries(self) -> dict[str, int]:
        """Statements so far by kind (the wrapper writes them on SIGUSR1)."""
        before = self.queries_file.stat().st_mtime_ns if self.queries_file.exists() else 0
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.queries_file.exists() or self.queries_file.stat().st_mtime_ns == before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"controller {self.name} wrote no statement counts")
            time.sleep(0.01)
        counts: dict[str, int] = json.loads(self.queries_file.read_text())
        return counts

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


@contextmanager
def controller(name: str, database_url: str, workdir: Path) -> Iterator[Controller]:
    port = free_port()
    queries = workdir / f"queries-{name}.json"
    env = {
        **os.environ,
        "EDGECTL_CONTROLLER_DATABASE_URL": database_url,
        "EDGECTL_CONTROLLER_HOST": "127.0.0.1",
        "EDGECTL_CONTROLLER_PORT": str(port),
        "EDGECTL_CONTROLLER_LOG_LEVEL": "warning",
        "EDGECTL_CONTROLLER_MIGRATE_ON_START": "false",
        "EDGECTL_CONTROLLER_MAX_CONNECTIONS": "4000",
        "EDGECTL_CONTROLLER_CONFIG": "",
        "FLEET_QUERIES_FILE": str(queries),
    }
    log = (workdir / f"controller-{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "_fleet_controller.py")], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"controller {name} exited; see {log.name}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"controller {name} did not come up in 60 s")
            time.sleep(0.05)
        yield Controller(name, url, process, queries)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def parked(controllers: Sequence[Controller], viewer: str) -> int:
    total = 0
    for c in controllers:
        text = httpx.get(
            f"{c.url}/metrics", headers={"Authorization": f"Bearer {viewer}"}, timeout=30
        ).text
        for line in text.splitlines():
            if line.startswith("edgectl_controller_long_polls_parked "):
                total += int(float(line.split()[1]))
    return total


# -- simulated agents -------------------------------------------------------------------


class Http:
    """HTTP/1.1 over one kept-alive asyncio connection: just what an agent sends."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, token: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nUser-Agent: edgectl-fleet-sim\r\n"
        )
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write((head + "\r\n").encode() + (body or b""))
        try:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("connection closed")
            status = int(line.split()[1])
            length = 0
            while True:
                header = await self.reader.readline()
                if header in (b"\r\n", b""):
                    break
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return status, await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class Sim:
    name: str
    token: str
    port: int
    revision: int | None = None
    epoch: str | None = None
    polling: bool = False  # a long-poll from the current revision is in flight
    answered: dict[str, float] = field(default_factory=dict)  # probe key -> answer in hand
    reported: dict[str, float] = field(default_factory=dict)  # probe key -> report returned
    errors: int = 0


class Fleet:
    def __init__(self) -> None:
        self.sims: list[Sim] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.probe: str | None = None  # '"key":"100.64.x.y"' of the quarantine in flight

    def start(self, sim: Sim) -> None:
        self.sims.append(sim)
        self.tasks.append(asyncio.create_task(self._run(sim)))

    async def _run(self, sim: Sim) -> None:
        http = Http(sim.port)
        base = f"/v1/gateways/{sim.name}"
        try:
            while True:
                try:
                    await self._once(sim, http, base)
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                    sim.errors += 1
                    sim.polling = False
                    await asyncio.sleep(0.2)
        finally:
            http.close()

    async def _once(self, sim: Sim, http: Http, base: str) -> None:
        cursor = f"?since={sim.revision}&epoch={sim.epoch}&wait=30"
        query = "" if sim.revision is None else cursor
        sim.polling = sim.revision is not None
        status, body = await http.request("GET", f"{base}/desired-state{query}", sim.token)
        answered = time.monotonic()
        sim.polling = False
        if status != 200:
            raise ValueError(f"desired-state: HTTP {status}")
        probe = self.probe
        document = json.loads(body)
        if document["revision"] == sim.revision:
            return  # the wait ran out
        sim.revision, sim.epoch = document["revision"], document.get("epoch")
        report = json.dumps({"applied_revision": sim.revision, "detail": {}}).encode()
        status, _ = await http.request("POST", f"{base}/status", sim.token, report)
        if status != 200:
            raise ValueError(f"status: HTTP {status}")
        if probe is not None and probe.encode() in body:
            sim.answered[probe] = answered
            sim.reported[probe] = time.monotonic()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def until(condition: object, what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {deadline_s:.0f} s for {what}")
        await asyncio.sleep(0.01)


async def settle(fleet: Fleet, controllers: Sequence[Controller], viewer: str, count: int) -> None:
    """Until ``count`` agents have a long-poll in flight and the controllers parked them."""
    await until(lambda: sum(1 for s in fleet.sims if s.polling) >= count, f"{count} agents polling")
    deadline = time.monotonic() + DEADLINE_S
    while await asyncio.to_thread(parked, controllers, viewer) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the controllers never parked {count} long-polls")
        await asyncio.sleep(0.05)


# -- the measurements ---------------------------------------------------------------------


@dataclass
class Round:
    propagation: float  # POST sent -> last agent's report returned
    per_agent: list[float]  # POST sent -> each agent's report returned
    post: float


async def quarantine(
    http: httpx.AsyncClient, url: str, abuse: str, account: int
) -> tuple[float, float]:
    """POST a quarantine of ``account``; (clock start, POST's own time)."""
    body = {"account": f"acct{account}", "mode": "smtp", "reason": "fleet bench"}
    started = time.monotonic()
    response = await http.post(
        f"{url}/v1/quarantines", json=body, headers={"Authorization": f"Bearer {abuse}"}
    )
    took = time.monotonic() - started
    if response.status_code != 201:
        raise RuntimeError(f"quarantine: HTTP {response.status_code} {response.text[:200]}")
    return started, took


def probe_of(account: int) -> str:
    return f'"key":"{address(account)}"'


async def wakeups(
    fleet: Fleet,
    controllers: Sequence[Controller],
    http: httpx.AsyncClient,
    abuse: str,
    viewer: str,
    first_account: int,
    count: int,
) -> tuple[list[float], list[float], list[float]]:
    """(same-process, other-process, difference) answer times per write, seconds."""
    same, other, cross = [], [], []
    a_sim, b_sim = fleet.sims[0], fleet.sims[1]  # on A and B
    for number in range(count):
        await settle(fleet, controllers, viewer, len(fleet.sims))
        writer = number % 2  # through A, then B
        account = first_account + number
        probe = fleet.probe = probe_of(account)
        started, _ = await quarantine(http, controllers[writer].url, abuse, account)
        await until(lambda p=probe: all(p in s.reported for s in (a_sim, b_sim)), "wake-ups")
        near, far = (a_sim, b_sim) if writer == 0 else (b_sim, a_sim)
        same.append(near.answered[probe] - started)
        other.append(far.answered[probe] - started)
        cross.append(far.answered[probe] - near.answered[probe])
    return same, other, cross


async def rounds(
    fleet: Fleet,
    controllers: Sequence[Controller],
    http: httpx.AsyncClient,
    abuse: str,
    viewer: str,
    first_account: int,
    count: int,
) -> list[Round]:
    done = []
    for number in range(count):
        await settle(fleet, controllers, viewer, len(fleet.sims))
        account = first_account + number
        probe = fleet.probe = probe_of(account)
        started, post = await quarantine(http, controllers[number % 2].url, abuse, account)
        await until(
            lambda p=probe: all(p in s.reported for s in fleet.sims),
            f"round {number}: every agent's report",
        )
        per_agent = [s.reported[probe] - started for s in fleet.sims]
        done.append(Round(max(per_agent), per_agent, post))
    return done


def summed(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in counts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


@dataclass
class SizeResult:
    agents: int
    rounds: list[Round]
    statements: dict[str, float]  # per change, by route (+ "all")
    cpu_per_change: float
    rss_mb: float


def ms(values: Sequence[float]) -> str:
    return (
        f"{statistics.median(values) * 1000:.0f} ms "
        f"({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"
    )


def seed(url: str, gateways_count: int, accounts: int) -> tuple[list[tuple[str, str]], str, str]:
    """The pool, the gateways (name, agent token), accounts; abuse and viewer tokens."""
    store = Store.open(url, migrate=True)
    try:
        create_pool(store, "bench", Pool("dyn", PoolKind.DYNAMIC, (Prefix.parse("100.64.0.0/10"),)))
        fleet = []
        for number in range(gateways_count):
            spec = gateways.GatewaySpec(f"gw-{number:04d}", GatewaySettings(), ("dyn",))
            _, agent_token = gateways.create_gateway(store, "bench", spec)
            fleet.append((spec.name, agent_token))
        seed_accounts(store, accounts)
        return fleet, token(store, Role.ABUSE), token(store, Role.VIEWER)
    finally:
        store.close()


async def measure(args: argparse.Namespace, controllers: list[Controller], seeded: tuple) -> None:  # type: ignore[type-arg]
    fleet_gateways, abuse, viewer = seeded
    sizes = sorted(args.agents)
    fleet = Fleet()
    results: list[SizeResult] = []
    async with httpx.AsyncClient(timeout=60) as http:
        # Phase 1: the cross-process wake-up, two agents alone.
        for number in range(2):
            name, agent_token = fleet_gateways[number]
            fleet.start(Sim(name, agent_token, controllers[number % 2].port))
        same, other, cross = await wakeups(fleet, controllers, http, abuse, viewer, 0, args.wakeups)
        print(
            f"\nwake-up, {args.wakeups} writes (through A and B in turn), clock from before "
            "the POST:\n"
            f"  agent on the writing controller  p50 {ms([percentile(same, 0.5)])}, "
            f"p99 {percentile(same, 0.99) * 1000:.0f} ms\n"
            f"  agent on the other controller    p50 {ms([percentile(other, 0.5)])}, "
            f"p99 {percentile(other, 0.99) * 1000:.0f} ms\n"
            f"  cross-process extra (other - same, per write): median {ms(cross)}, "
            f"p99 {percentile(cross, 0.99) * 1000:.0f} ms",
            flush=True,
        )
        account = args.wakeups
        for size in sizes:
            while len(fleet.sims) < size:
                number = len(fleet.sims)
                name, agent_token = fleet_gateways[number]
                fleet.start(Sim(name, agent_token, controllers[number % 2].port))
            await settle(fleet, controllers, viewer, size)
            rss = sum(c.rss_mb() for c in controllers)
            before = [c.queries() for c in controllers]
            window = time.monotonic()
            cpu_before = sum(cpu_seconds(c.process.pid) for c in controllers)
            done = await rounds(fleet, controllers, http, abuse, viewer, account, args.rounds)
            account += args.rounds
            # The last round's reports are in; nothing else runs meanwhile.
            cpu = (sum(cpu_seconds(c.process.pid) for c in controllers) - cpu_before) / len(done)
            after = [c.queries() for c in controllers]
            delta = summed(after)
            for key, value in summed(before).items():
                delta[key] = delta.get(key, 0) - value
            delta.pop("metrics", None)  # the bench's own scrapes
            # Timers (re-check each second, sweeper, escalation engine): per second.
            background = delta.pop("background", 0) / max(time.monotonic() - window, 1e-9)
            per_change = {key: value / len(done) for key, value in delta.items()}
            per_change["all"] = sum(delta.values()) / len(done)
            results.append(SizeResult(size, done, per_change, cpu, rss))
            every = [t for r in done for t in r.per_agent]
            print(
                f"\n{size} agents ({size // 2} per controller), {len(done)} quarantines "
                f"(load {load_average()}):\n"
                f"  propagation to the last agent's report: {ms([r.propagation for r in done])}\n"
                f"  every agent's report: p50 {percentile(every, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(every, 0.99) * 1000:.0f} ms\n"
                f"  POST /v1/quarantines itself: {ms([r.post for r in done])}\n"
                f"  SQL statements per change, both controllers: {per_change['all']:.1f} "
                f"(desired-state path {per_change.get('desired', 0):.1f}, the POST "
                f"{per_change.get('write', 0):.1f}, status reports "
                f"{per_change.get('status', 0):.1f}, other "
                f"{per_change.get('other', 0):.1f}); timers (re-check, sweeper, escalation): "
                f"{background:.0f}/s\n"
                f"  controller CPU per change: {cpu * 1000:.0f} ms; resident: {rss:.0f} MiB\n"
                f"  simulated agents' errors: {sum(s.errors for s in fleet.sims)}",
                flush=True,
            )
        await fleet.stop()
    small, large = results[0], results[-1]
    growth = large.statements.get("desired", 0) / max(small.statements.get("desired", 0), 1e-9)
    per_agent_kib = (large.rss_mb - small.rss_mb) * 1024 / max(large.agents - small.agents, 1)
    print(
        f"\ndesired-state statements per change, {large.agents} vs {small.agents} agents: "
        f"{large.statements.get('desired', 0):.1f} vs {small.statements.get('desired', 0):.1f} "
        f"({growth:.2f}x); all statements {large.statements['all']:.0f} vs "
        f"{small.statements['all']:.0f}\n"
        f"memory per parked agent (both controllers): {per_agent_kib:.0f} KiB\n"
        f"load average at end: {load_average()}"
    )
    command = "bench/fleet.py " + " ".join(sys.argv[1:])
    props = [r.propagation for r in large.rounds]
    every = [t for r in large.rounds for t in r.per_agent]
    emit(
        Row(
            "fleet_propagation_p99",
            f"propagation to all {large.agents} agents (2 controllers, PostgreSQL) p99 <= 1 s",
            percentile(every, 0.99) * 1000,
            min(props) * 1000,
            max(props) * 1000,
            "ms",
            "POST sent -> every agent's status report returned; min-max: last agent per round",
            len(large.rounds),
            percentile(every, 0.99) <= TARGET_PROPAGATION_S,
            command,
        )
    )
    emit(
        Row(
            "fleet_cross_process_wakeup_p99",
            "write on one controller -> long-poll on the other, extra p99 <= 50 ms",
            percentile(cross, 0.99) * 1000,
            min(cross) * 1000,
            max(cross) * 1000,
            "ms",
            "answer on the other controller - answer on the writing one, per write",
            len(cross),
            percentile(cross, 0.99) <= TARGET_WAKEUP_S,
            command,
        )
    )
    emit(
        Row(
            "fleet_desired_queries_growth",
            f"desired-state SQL per change constant, {large.agents} vs {small.agents} agents",
            growth,
            growth,
            growth,
            "x",
            "statements of the desired-state path per change, both controllers",
            len(large.rounds),
            growth <= TARGET_QUERY_GROWTH,
            command,
        )
    )
    emit(
        Row(
            "fleet_memory_per_parked_agent",
            "controller memory per parked agent (reported)",
            per_agent_kib,
            per_agent_kib,
            per_agent_kib,
            "KiB",
            "resident memory of both controllers, largest fleet parked less smallest",
            1,
            None,
            command,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--agents",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[100, 1000],
        help="fleet sizes, smallest first (default 100,1000)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="quarantines per fleet size")
    parser.add_argument("--wakeups", type=int, default=30, help="writes of the wake-up phase")
    args = parser.parse_args(argv)
    if min(args.agents) < 2 or len(args.agents) < 2 or max(args.agents) > 5000:
        parser.error("--agents: at least two sizes, each 2-5000")
    if not 1 <= args.rounds <= 100 or not 2 <= args.wakeups <= 200:
        parser.error("--rounds 1-100, --wakeups 2-200")
    install_signal_handlers()
    # Every agent holds a connection in this process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    print(f"load average at start: {load_average()}", flush=True)
    largest = max(args.agents)
    with ExitStack() as stack:
        pg = stack.enter_context(pgserver.running(durable=True))
        url = pg.create_database("fleet")
        started = time.monotonic()
        seeded = seed(url, largest, args.wakeups + args.rounds * len(args.agents) + 10)
        print(f"seeded {largest} gateways in {time.monotonic() - started:.1f} s", flush=True)
        workdir = Path(stack.enter_context(_tempdir()))
        controllers = [stack.enter_context(controller(name, url, workdir)) for name in ("A", "B")]
        asyncio.run(measure(args, controllers, seeded))
    return 0


@contextmanager
def _tempdir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgectl-fleet-") as path:
        yield path


if __name__ == "__main__":
    sys.exit(main())
