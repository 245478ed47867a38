"""A small edgectl system for the agent tests: a controller process, two lab gateways,
an agent process on each, all talking real HTTP on 127.0.0.1.

* ``Controller``: ``edgectl controller`` on a SQLite file, started, killed and
  restarted on the same database (or a restored backup of it);
* ``AgentProc``: ``edgectl agent run`` for one gateway namespace, with its
  config, token file, state directory, log file and metrics port;
* ``System``: both, plus the two standard lab topologies (``gw-a``, ``gw-b``)
  serving the same pools, and the API calls the tests make.

Every process is started by a fixture that kills it afterwards, every wait is
a poll with a deadline, and namespaces go with their topology.
"""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgectl.controller.store import Store
from edgectl.lab.probe import Listener, Outcome, connect
from edgectl.lab.topology import Topology, new_prefix, standard_topology
from edgectl.testing import processes
from edgectl.testing.fleet import FAST_AGENT, AgentFiles, create_token, toml_table, write_private
from edgectl.testing.processes import EDGECTL, free_port, stop
from edgectl.testing.rest import HttpError, Rest
from edgectl.testing.wait import wait_until

BASE_PREFIX = "ectl-t"  # netns-tests/conftest.py: leftovers of dead runs are removed by it
GATEWAYS = ("gw-a", "gw-b")
MAIL_PORTS = (25, 465, 587)
DYN4_A, DYN4_B, DYN4_C = "100.64.0.10", "100.64.0.11", "100.64.0.12"
DYN6_A1, DYN6_B = "2001:db8:1000:100::10", "2001:db8:1000:200::10"
DYN6_A_KEY = "2001:db8:1000:100::/56"  # the subscriber DYN6_A1 belongs to
MX4, MX6 = "203.0.113.25", "2001:db8:ffff::25"
RELAY4 = "198.51.100.25"
SOURCE_HOST = {DYN4_A: "dyn4", DYN4_B: "dyn4", DYN4_C: "dyn4", DYN6_A1: "dyn6", DYN6_B: "dyn6"}
# Time for a dropped SYN to count as dropped; everything else answers at once.
DROP_TIMEOUT = 0.5
CONNECT_TIMEOUT = 2.0
START_TIMEOUT = 20.0
CONVERGE_TIMEOUT = 10.0

PYTHON = sys.executable
CONTROLLER_MAIN = (
    "import sys; from pathlib import Path; from edgectl.controller.settings import load; "
    "from edgectl.controller.server import serve; serve(load(Path(sys.argv[1])))"
)


AGENT = [EDGECTL, "agent"]


# --- controller ----------------------------------------------------------------


class Controller:
    """``edgectl controller`` on ``database_url``, or on a SQLite file in ``workdir``.

    ``name``: its config and log file names (several controllers, one workdir);
    ``token``: a token made already (else one is made in the database);
    ``settings``: over the agent tier's fast timings."""

    def __init__(
        self,
        workdir: Path,
        database_url: str | None = None,
        *,
        name: str = "controller",
        token: str | None = None,
        **settings: object,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.db = workdir / "controller.db"
        self.database_url = database_url or f"sqlite:///{self.db}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / f"{name}.toml"
        values = {
            "database_url": self.database_url,
            "port": self.port,
            "poll_interval": 0.05,
            "sweep_interval": 0.2,
            # The escalation engine's pass (no policy exists unless a test makes one).
            "escalation_interval": 0.5,
            "log_level": "warning",
            **settings,
        }
        self.config.write_text(toml_table("controller", values))
        self.token = token or create_token(self.database_url, "agent-tests", "netops")
        self.rest = Rest(self.url, self.token)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{name}.log"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "controller already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-c", CONTROLLER_MAIN, str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        assert wait_until(self.healthy, START_TIMEOUT, 0.05), (
            f"{self.name} did not start:\n{self.logs()}"
        )

    def kill(self) -> None:
        stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        # uvicorn's graceful stop waits out open long-polls; nothing here needs that.
        stop(self.proc, signal.SIGTERM, grace=3.0)

    def healthy(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.rest.healthy()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def backup(self, target: Path) -> None:
        """A consistent copy of the live database (SQLite's online backup)."""
        assert self.database_url == f"sqlite:///{self.db}", "backups are of the SQLite file"
        with sqlite3.connect(self.db) as source, sqlite3.connect(target) as copy:
            source.backup(copy)

    def restore(self, backup: Path) -> None:
        """Put ``backup`` in place of the database (controller stopped)."""
        assert self.proc is None or self.proc.poll() is not None
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        self.db.write_bytes(backup.read_bytes())

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.rest.call(method, path, body)


# --- agents --------------------------------------------------------------------


_REVISION = re.compile(r"^edgectl_agent_applied_revision\{[^}]*\} (-?\d+)$", re.M)


class AgentProc:
    def __init__(
        self, workdir: Path, gateway: str, netns: str, controller_url: str | Sequence[str]
    ) -> None:
        self.gateway = gateway
        self.netns = netns
        self.workdir = workdir / gateway
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.files = AgentFiles(self.workdir)
        self.state_dir = self.files.state_dir
        self.token_file = self.files.token_file
        self.config = self.files.config
        self.metrics_port = free_port()
        self.log = self.workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(controller_url)

    def write_config(self, controller_url: str | Sequence[str], **extra: Any) -> None:
        """``controller_url``: one URL, or several (``controller_urls``, fail-over order)."""
        self.files.write(
            controller_url=controller_url,
            gateway=self.gateway,
            netns=self.netns,
            metrics_listen=f"127.0.0.1:{self.metrics_port}",
            settings={**FAST_AGENT, **extra},
        )

    def set_token(self, token: str) -> None:
        write_private(self.token_file, token + "\n")

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "agent already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*AGENT, "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        assert wait_until(lambda: self.metrics() is not None, START_TIMEOUT, 0.05), self.logs()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> int | None:
        return stop(self.proc)

    def kill(self) -> None:
        stop(self.proc, signal.SIGKILL)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metrics(self) -> str | None:
        if not self.running():
            return None
        try:
            return Rest(f"http://127.0.0.1:{self.metrics_port}", timeout=2).request(
                "GET", "/metrics"
            )
        except (OSError, HttpError):
            return None

    def metric(self, name: str, **labels: str) -> float | None:
        text = self.metrics() or ""
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{key}="{value}"' in line for key, value in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None

    def wait_log(self, text: str, timeout: float = 10.0) -> bool:
        return wait_until(lambda: text in self.logs(), timeout, 0.02)

    def wait_metric(self, name: str, value: float, timeout: float = 10.0) -> bool:
        return wait_until(lambda: self.metric(name) == value, timeout, 0.05)

    def applied_revision(self) -> int | None:
        match = _REVISION.search(self.metrics() or "")
        return None if match is None else int(match.group(1))


# --- the system ----------------------------------------------------------------


@dataclass
class Site:
    """One gateway: its lab topology, its agent, its outside servers."""

    name: str
    topology: Topology
    agent: AgentProc
    mx: Listener


class System:
    def __init__(
        self, workdir: Path, topologies: dict[str, Topology], database_url: str | None = None
    ) -> None:
        self.workdir = workdir
        self.controller = Controller(workdir, database_url)
        self.controller.start()
        self._world()
        self.sites: dict[str, Site] = {}
        for name in GATEWAYS:
            topo = topologies[name]
            agent = AgentProc(workdir, name, topo.gateway_ns, self.controller.url)
            agent.set_token(self.agent_tokens[name])
            mx = Listener(topo.hosts["mx"].ns, topo.hosts["mx"].addresses, MAIL_PORTS)
            self.sites[name] = Site(name, topo, agent, mx)

    def _world(self) -> None:
        """Pools, a relay and two gateways serving the same pools (the standard lab's)."""
        api = self.api
        api("POST", "/v1/pools", {"name": "dyn4", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]})
        api(
            "POST",
            "/v1/pools",
            {
                "name": "dyn6",
                "kind": "dynamic",
                "prefixes": ["2001:db8:1000::/40"],
                "subscriber_prefix_len": 56,
            },
        )
        api(
            "POST",
            "/v1/pools",
            {
                "name": "static",
                "kind": "static",
                "prefixes": ["100.65.0.0/24", "2001:db8:2000::/40"],
                "subscriber_prefix_len": 56,
            },
        )
        api(
            "POST",
            "/v1/pools",
            {
                "name": "infra",
                "kind": "infrastructure",
                "prefixes": ["198.51.100.0/24", "2001:db8:eeee::/48"],
            },
        )
        api("POST", "/v1/relays", {"name": "isp_mx", "prefixes": [RELAY4, "2001:db8:eeee::25"]})
        self.settings: dict[str, Any] = {
            "block_action": "reset",
            "resolvers": ["198.51.100.53", "2001:db8:eeee:53::53"],
            "portal": ["198.51.100.80", "2001:db8:eeee:80::80"],
        }
        settings = self.settings
        self.agent_tokens: dict[str, str] = {}
        for name in GATEWAYS:
            created = api(
                "POST",
                "/v1/gateways",
                {"name": name, "pools": ["dyn4", "dyn6", "static", "infra"], "settings": settings},
            )
            self.agent_tokens[name] = created["agent_token"]

    # -- API -------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.controller.call(method, path, body)

    def session(self, account: str, ipv4: str | None = None, ipv6: str | None = None) -> None:
        body = {k: v for k, v in (("ipv4", ipv4), ("ipv6", ipv6)) if v is not None}
        self.api("PUT", f"/v1/accounts/{account}/session", body)

    def quarantine(self, account: str, mode: str = "smtp", **extra: Any) -> int:
        body = {"account": account, "mode": mode, "reason": "agent test", **extra}
        ident: int = self.api("POST", "/v1/quarantines", body)["quarantine"]["id"]
        return ident

    def lift(self, kind: str, ident: int) -> None:
        self.api("POST", f"/v1/{kind}/{ident}/lift", {"reason": "test over"})

    def set_settings(self, gateway: str, **changes: Any) -> None:
        """The gateway's settings: the system's own with ``changes`` (a PATCH replaces them all)."""
        self.api("PATCH", f"/v1/gateways/{gateway}", {"settings": {**self.settings, **changes}})

    def revision(self, gateway: str) -> int:
        revision: int = self.api("GET", f"/v1/gateways/{gateway}")["revision"]
        return revision

    def clear(self) -> None:
        """Lift every active quarantine and exemption, end every session used here."""
        for kind in ("quarantines", "exemptions"):
            for hold in self.api("GET", f"/v1/{kind}?state=active&limit=1000"):
                self.lift(kind, hold["id"])
        for account in ("alice", "bob", "carol", "dave"):
            try:
                self.api("DELETE", f"/v1/accounts/{account}/session")
            except HttpError as error:
                if error.status != 404:
                    raise

    # -- agents -----------------------------------------------------------------

    def start_stopped(self) -> None:
        """Start again whatever a test stopped or killed: the controller, the agents."""
        if not self.controller.healthy():
            self.controller.start()
        for agent in self.agents():
            if not agent.running():
                agent.start()

    def agents(self) -> list[AgentProc]:
        return [site.agent for site in self.sites.values()]

    def converged(self, timeout: float = CONVERGE_TIMEOUT) -> bool:
        """Every agent reports the controller's current revision for its gateway."""

        def check() -> bool:
            return all(
                site.agent.applied_revision() == self.revision(site.name)
                for site in self.sites.values()
            )

        return wait_until(check, timeout, 0.05)

    def close(self) -> None:
        for site in self.sites.values():
            site.agent.terminate()
            site.mx.close()
        self.controller.stop()


# --- traffic -------------------------------------------------------------------


def mail(site: Site, src: str, port: int = 587, dst: str | None = None) -> Outcome:
    """One TCP connect from the lab host holding ``src`` through ``site``'s gateway
    (to the MX of ``src``'s family unless ``dst`` is given)."""
    host = site.topology.hosts[SOURCE_HOST[src]]
    dst = dst or (MX6 if ":" in src else MX4)
    return connect(host.ns, dst, port, src=src, timeout=CONNECT_TIMEOUT)


def outcome_becomes(
    site: Site, src: str, expected: Outcome, port: int = 587, timeout: float = CONVERGE_TIMEOUT
) -> bool:
    return wait_until(lambda: mail(site, src, port) is expected, timeout, 0.05)


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module", name="topologies")
def topologies_fixture(leftovers_removed: list[str]) -> Iterator[dict[str, Topology]]:
    built: dict[str, Topology] = {}
    try:
        for name in GATEWAYS:
            topo = standard_topology(new_prefix(BASE_PREFIX))
            built[name] = topo
            topo.build()
        yield built
    finally:
        for topo in built.values():
            topo.destroy()


SystemT = TypeVar("SystemT", bound=System)


@contextmanager
def running(make: Callable[[], SystemT]) -> Iterator[SystemT]:
    """``make()``'s system with every agent started and converged; closed on exit.

    The ``system`` fixture of a module with a system of its own (two controllers,
    say) is this around its own ``make``; ``clean`` then works on it unchanged."""
    system = make()
    try:
        for agent in system.agents():
            agent.start()
        assert system.converged(), "agents did not converge at start"
        yield system
    finally:
        system.close()


@pytest.fixture(scope="module", name="system")
def system_fixture(
    topologies: dict[str, Topology],
    tmp_path_factory: pytest.TempPathFactory,
    controller_database: str | None,
) -> Iterator[System]:
    workdir = tmp_path_factory.mktemp("agent-system")
    with running(lambda: System(workdir, topologies, controller_database)) as system:
        yield system


@pytest.fixture(name="clean")
def clean_fixture(system: System) -> Iterator[System]:
    """Every service up, no holds, every agent converged: before and after each test."""

    def settle() -> None:
        system.start_stopped()
        system.clear()
        assert system.converged(), "agents did not converge"

    settle()
    yield system
    settle()


# --- the gateway by hand ---------------------------------------------------------


def nft(site: Site, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``nft`` inside ``site``'s gateway namespace only, never the host's ruleset."""
    return processes.nft(site.topology.gateway_ns, *args, check=check)


def has_table(site: Site) -> bool:
    return "table inet edgectl\n" in nft(site, "list", "tables").stdout


def agent_cli(agent: AgentProc, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, action, "--config", str(agent.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def missing_keys(site: Site, set_name: str, keys: list[str]) -> int:
    """How many of ``keys`` are not in the set (key-by-key netlink probes, no listing)."""
    from edgectl.agent import kernel_readback as kr
    from edgectl.agent.netlink.constants import NFPROTO_INET
    from edgectl.agent.netlink.nfsocket import NfNetlink
    from edgectl.lab.netns import in_netns

    with in_netns(site.topology.gateway_ns):
        sock = NfNetlink()
    try:
        by_bytes = [socket.inet_aton(key) for key in keys]
        return len(kr.missing_elements(sock, NFPROTO_INET, "edgectl", set_name, by_bytes))
    finally:
        sock.close()


def quarantine_offline(controller: Controller, account: str) -> None:
    """Quarantine through the store while the controller process is down
    (an operator's change that the agents must pick up when it returns)."""
    from edgectl.controller.store import holds
    from edgectl.model import QuarantineMode

    store = Store.open(controller.database_url, migrate=False)
    try:
        spec = holds.QuarantineSpec(mode=QuarantineMode.SMTP, reason="offline", account=account)
        holds.quarantine(store, "token:agent-tests", spec)
    finally:
        store.close()
