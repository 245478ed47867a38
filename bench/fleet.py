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

Beside them, ``REAL_AGENTS`` real gateways: ``edgectl agent run`` processes
(bench/agent_common.py), each with a network namespace of its own
(``ectl-bench-<hex>-real<n>``, always deleted) whose nftables it programs,
each given both controller URLs (real-0 lists A first, real-1 B first), on
the agent's deployed timings.  Their clock stops when a netlink element
lookup finds the key in their kernel's ``q_smtp_4`` set (polled every
2 ms by this process, as bench/agent_propagation.py does).  Needs root.

Phases, each measured with the fleet parked (every agent's long-poll
counted on the controllers' ``edgectl_controller_long_polls_parked``):

* wake-up: one agent on each controller; ``--wakeups`` quarantines, written
  through A and B in turn.  Clock from just before the POST to each agent's
  answer: the agent on the writing controller (woken in-process at commit)
  and on the other one (woken by NOTIFY).  The cross-process wake-up is the
  difference, per write.
* fleet, for each size in ``--agents`` (simulated agents; the real ones
  come on top): ``--rounds`` quarantines, written through A and B in turn,
  each reaching every gateway.  Propagation: clock from just before the
  POST to the last simulated agent's status report returning and the key
  in each real agent's kernel, whichever is later (and p50/p99 over every
  agent and round; the real agents' own figures on a line and row of
  their own).  Per change: SQL statements of
  both controllers by the route they served (the desired-state path, the
  POST, status reports; statements of timers are shown per second), their
  CPU.  Memory per parked agent: the controllers' resident memory
  with the largest fleet parked less with the smallest, per agent.

Prints medians with min-max over rounds, and BENCH-RESULT rows for
bench/summary.py.  Loops are bounded in count and time (every wait has a
deadline).  Run as root (the real agents' namespaces); touches nothing
outside its temporary files and its own namespaces, never the root
namespace's ruleset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import BENCH_BASE, install_signal_handlers, namespace, run_id
from _results import Row, emit
from agent_common import Probe, agents, write_agent
from controller_common import address, cpu_seconds, percentile, seed_accounts, token

from edgectl.controller.auth import Role
from edgectl.controller.store import Store, gateways
from edgectl.controller.store.catalog import create_pool
from edgectl.model import GatewaySettings, Pool, PoolKind, Prefix
from edgectl.testing import pgserver
from edgectl.testing.processes import free_port
from edgectl.testing.wait import wait_until

HERE = Path(__file__).resolve().parent
DEADLINE_S = 60.0  # any single wait (a round's propagation, parking) is "broken" past this
TARGET_PROPAGATION_S = 1.0
TARGET_WAKEUP_S = 0.050
TARGET_QUERY_GROWTH = 1.10  # desired-state statements per change, largest / smallest fleet
REAL_AGENTS = 2  # real `edgectl agent run` processes on real kernels, beside the simulated ones
PROBE_SET = "q_smtp_4"  # the forward chain's set of IPv4 smtp quarantines


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


async def settle(fleet: Fleet, controllers: Sequence[Controller], viewer: str, others: int) -> None:
    """Until every simulated agent has a long-poll in flight and the controllers parked
    them and ``others`` more (the real agents')."""
    sims = len(fleet.sims)
    await until(lambda: all(s.polling for s in fleet.sims), f"{sims} agents polling")
    count = sims + others
    deadline = time.monotonic() + DEADLINE_S
    while await asyncio.to_thread(parked, controllers, viewer) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the controllers never parked {count} long-polls")
        await asyncio.sleep(0.05)


# -- real agents --------------------------------------------------------------------------


@dataclass
class Real:
    """A real agent's gateway and a probe of its kernel."""

    name: str
    probe: Probe


async def in_kernels(reals: Sequence[Real], account: int) -> list[float]:
    """When (monotonic) ``account``'s key is found in each real agent's kernel, in order."""
    key = socket.inet_aton(address(account).address)
    found: dict[str, float] = {}
    deadline = time.monotonic() + DEADLINE_S
    while len(found) < len(reals):
        for real in reals:
            if real.name not in found and real.probe.has(PROBE_SET, key):
                found[real.name] = time.monotonic()
        if len(found) < len(reals):
            if time.monotonic() > deadline:
                missing = sorted(r.name for r in reals if r.name not in found)
                raise RuntimeError(f"acct{account} not in the kernels of {missing}")
            # One sweep of lookups every 2 ms: at most 2 ms on a figure, little CPU.
            await asyncio.sleep(0.002)
    return [found[real.name] for real in reals]


@contextmanager
def real_agents(
    workdir: Path, seeded: Seeded, controllers: Sequence[Controller]
) -> Iterator[list[Real]]:
    """The real agents, each in a namespace of its own, in sync; stopped, namespaces deleted."""
    rid = run_id()
    reals, configs = [], []
    with ExitStack() as own:
        for number, (name, agent_token) in enumerate(seeded.reals):
            netns = own.enter_context(namespace(f"{BENCH_BASE}-{rid}-real{number}"))
            # Alternate which controller each lists first, as a fleet's inventory would.
            order = controllers[number % 2 :] + controllers[: number % 2]
            urls = [c.url for c in order]
            configs.append(write_agent(workdir, name, agent_token, netns, urls))
            probe = Probe(netns)
            own.callback(probe.close)
            reals.append(Real(name, probe))
        own.enter_context(agents(configs, workdir))  # stopped before the namespaces go
        wait_until(
            lambda: all(r.probe.has_table() for r in reals),
            DEADLINE_S,
            what=f"the real agents' first sync (logs in {workdir})",
        )
        yield reals


# -- the measurements ---------------------------------------------------------------------


@dataclass
class Round:
    started: float  # monotonic, just before the POST
    post: float  # the POST's own time
    simulated: list[float]  # POST sent -> each simulated agent's report returned
    real: list[float]  # POST sent -> the key in each real agent's kernel

    @property
    def propagation(self) -> float:
        """POST sent -> the last agent, simulated or real."""
        return max(self.simulated + self.real)


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


@dataclass
class Bench:
    """What every measured write needs: the agents, the controllers, the tokens."""

    fleet: Fleet
    reals: list[Real]
    controllers: Sequence[Controller]
    http: httpx.AsyncClient
    abuse: str
    viewer: str

    async def write(self, account: int, writer: int) -> Round:
        """With every agent parked, quarantine ``account`` through controller ``writer``;
        returns once every simulated agent reported it and every real kernel has it."""
        fleet = self.fleet
        await settle(fleet, self.controllers, self.viewer, len(self.reals))
        probe = fleet.probe = probe_of(account)
        # Watching from before the POST: a fast kernel may have the key before it returns.
        watch = asyncio.create_task(in_kernels(self.reals, account))
        try:
            url = self.controllers[writer].url
            started, post = await quarantine(self.http, url, self.abuse, account)
            await until(
                lambda: all(probe in s.reported for s in fleet.sims),
                f"acct{account}: every simulated agent's report",
            )
            kernels = await watch
        finally:
            watch.cancel()
        simulated = [s.reported[probe] - started for s in fleet.sims]
        return Round(started, post, simulated, [t - started for t in kernels])


async def wakeups(
    bench: Bench, first_account: int, count: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """(same-process, other-process, difference) answer times per write, and the real
    agents' key-in-kernel times, seconds."""
    same, other, cross, real = [], [], [], []
    a_sim, b_sim = bench.fleet.sims[0], bench.fleet.sims[1]  # on A and B
    for number in range(count):
        writer = number % 2  # through A, then B
        account = first_account + number
        done = await bench.write(account, writer)
        probe = probe_of(account)
        near, far = (a_sim, b_sim) if writer == 0 else (b_sim, a_sim)
        same.append(near.answered[probe] - done.started)
        other.append(far.answered[probe] - done.started)
        cross.append(far.answered[probe] - near.answered[probe])
        real.extend(done.real)
    return same, other, cross, real


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

    def every(self) -> list[float]:
        """POST sent -> each agent (simulated and real), every round."""
        return [t for r in self.rounds for t in r.simulated + r.real]

    def real(self) -> list[float]:
        return [t for r in self.rounds for t in r.real]


def ms(values: Sequence[float]) -> str:
    return (
        f"{statistics.median(values) * 1000:.0f} ms "
        f"({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"
    )


def spread(values: Sequence[float]) -> str:
    return (
        f"p50 {percentile(list(values), 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(list(values), 0.99) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"
    )


@dataclass
class Seeded:
    fleet: list[tuple[str, str]]  # simulated agents' gateways: (name, agent token)
    reals: list[tuple[str, str]]  # the real agents' gateways
    abuse: str
    viewer: str


def seed(url: str, gateways_count: int, accounts: int) -> Seeded:
    """The pool, the gateways (simulated and real), accounts; abuse and viewer tokens."""
    store = Store.open(url, migrate=True)
    try:
        create_pool(store, "bench", Pool("dyn", PoolKind.DYNAMIC, (Prefix.parse("100.64.0.0/10"),)))

        def gateway(name: str) -> tuple[str, str]:
            spec = gateways.GatewaySpec(name, GatewaySettings(), ("dyn",))
            return name, gateways.create_gateway(store, "bench", spec)[1]

        fleet = [gateway(f"gw-{number:04d}") for number in range(gateways_count)]
        reals = [gateway(f"real-{number}") for number in range(REAL_AGENTS)]
        seed_accounts(store, accounts)
        return Seeded(fleet, reals, token(store, Role.ABUSE), token(store, Role.VIEWER))
    finally:
        store.close()


async def measure(
    args: argparse.Namespace, controllers: list[Controller], seeded: Seeded, reals: list[Real]
) -> None:
    sizes = sorted(args.agents)
    fleet = Fleet()
    results: list[SizeResult] = []
    async with httpx.AsyncClient(timeout=60) as http:
        bench = Bench(fleet, reals, controllers, http, seeded.abuse, seeded.viewer)
        # Phase 1: the cross-process wake-up, two simulated agents (and the real ones).
        for number in range(2):
            name, agent_token = seeded.fleet[number]
            fleet.start(Sim(name, agent_token, controllers[number % 2].port))
        same, other, cross, real_wakeup = await wakeups(bench, 0, args.wakeups)
        print(
            f"\nwake-up, {args.wakeups} writes (through A and B in turn), clock from before "
            "the POST:\n"
            f"  agent on the writing controller  {spread(same)}\n"
            f"  agent on the other controller    {spread(other)}\n"
            f"  cross-process extra (other - same, per write): median {ms(cross)}, "
            f"p99 {percentile(cross, 0.99) * 1000:.0f} ms\n"
            f"  real agents ({len(reals)}, one first on each controller), key in kernel: "
            f"{spread(real_wakeup)}",
            flush=True,
        )
        account = args.wakeups
        for size in sizes:
            while len(fleet.sims) < size:
                number = len(fleet.sims)
                name, agent_token = seeded.fleet[number]
                fleet.start(Sim(name, agent_token, controllers[number % 2].port))
            await settle(fleet, controllers, seeded.viewer, len(reals))
            rss = sum(c.rss_mb() for c in controllers)
            before = [c.queries() for c in controllers]
            window = time.monotonic()
            cpu_before = sum(cpu_seconds(c.process.pid) for c in controllers)
            done = [await bench.write(account + n, n % 2) for n in range(args.rounds)]
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
            result = SizeResult(size, done, per_change, cpu, rss)
            results.append(result)
            simulated = [t for r in done for t in r.simulated]
            print(
                f"\n{size} simulated agents ({size // 2} per controller) + {len(reals)} real, "
                f"{len(done)} quarantines (load {load_average()}):\n"
                f"  propagation to the last agent: {ms([r.propagation for r in done])}\n"
                f"  every agent: {spread(result.every())}\n"
                f"  simulated agents' reports: {spread(simulated)}\n"
                f"  real agents' kernels (own namespaces, both URLs): {spread(result.real())}\n"
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
    report(results, cross, len(reals))


def report(results: Sequence[SizeResult], cross: Sequence[float], reals: int) -> None:
    """The closing comparison and the BENCH-RESULT rows."""
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
    every, real = large.every(), large.real()
    emit(
        Row(
            "fleet_propagation_p99",
            f"propagation to all {large.agents} simulated + {reals} real agents "
            "(2 controllers, PostgreSQL) p99 <= 1 s",
            percentile(every, 0.99) * 1000,
            min(props) * 1000,
            max(props) * 1000,
            "ms",
            "POST sent -> each simulated agent's status report returned, the key in each "
            "real agent's kernel; min-max: last agent per round",
            len(large.rounds),
            percentile(every, 0.99) <= TARGET_PROPAGATION_S,
            command,
        )
    )
    emit(
        Row(
            "fleet_real_agents_p99",
            f"propagation to the {reals} real agents (own kernels, both controller URLs) "
            f"among {large.agents} simulated, p99 <= 1 s",
            percentile(real, 0.99) * 1000,
            min(real) * 1000,
            max(real) * 1000,
            "ms",
            "POST sent -> netlink lookup finds the key in the real agent's kernel set",
            len(real),
            percentile(real, 0.99) <= TARGET_PROPAGATION_S,
            command,
        )
    )
    emit(
        Row(
            "fleet_cross_process_wakeup_p99",
            "write on one controller -> long-poll on the other, extra p99 <= 50 ms",
            percentile(list(cross), 0.99) * 1000,
            min(cross) * 1000,
            max(cross) * 1000,
            "ms",
            "answer on the other controller - answer on the writing one, per write",
            len(cross),
            percentile(list(cross), 0.99) <= TARGET_WAKEUP_S,
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
        help="simulated fleet sizes, smallest first (default 100,1000)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="quarantines per fleet size")
    parser.add_argument("--wakeups", type=int, default=30, help="writes of the wake-up phase")
    args = parser.parse_args(argv)
    if min(args.agents) < 2 or len(args.agents) < 2 or max(args.agents) > 5000:
        parser.error("--agents: at least two sizes, each 2-5000")
    if not 1 <= args.rounds <= 100 or not 2 <= args.wakeups <= 200:
        parser.error("--rounds 1-100, --wakeups 2-200")
    if os.geteuid() != 0:
        parser.error("needs root: the real agents run in network namespaces of their own")
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
        print(f"seeded {largest + REAL_AGENTS} gateways in {time.monotonic() - started:.1f} s")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgectl-fleet-")))
        controllers = [stack.enter_context(controller(name, url, workdir)) for name in ("A", "B")]
        started = time.monotonic()
        reals = stack.enter_context(real_agents(workdir, seeded, controllers))
        print(f"{len(reals)} real agents in sync in {time.monotonic() - started:.1f} s", flush=True)
        asyncio.run(measure(args, controllers, seeded, reals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
