"""Driving edgectl against the lab gateway: policies, the CLI, nft read-back, servers.

The dataplane tests (``test_dataplane_*.py``) import their fixtures from here:

* ``servers``: listeners on every outside host, one set per module (they are
  cheap to keep and expensive to race with);
* ``gateway``: a ``Gateway`` for one test, with ``table inet edgectl`` (and
  the foreign table some tests add) deleted before and after it, so every
  test starts from a gateway that forwards everything.

Policies are plain dicts (the schema of ``edgectl.model.serial``) written to
the test's ``tmp_path`` as JSON and applied with the real ``edgectl`` CLI in a
subprocess, the way an operator runs it.  nft is only ever run inside the lab's
gateway namespace (``ip netns exec``), never in the namespace pytest runs in.
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgectl.agent import kernel_readback
from edgectl.agent.apply import Dataplane
from edgectl.agent.netlink.nfsocket import NfNetlink
from edgectl.lab.netns import in_netns
from edgectl.lab.probe import Listener, Outcome, connect, udp_query
from edgectl.lab.topology import Topology
from edgectl.testing.processes import EDGECTL, nft
from edgectl.testing.wait import wait_until

# An expected TIMEOUT (a dropped SYN) costs this much; nothing on a veth takes
# anywhere near as long to answer, so a CONNECTED or RESET is never mistaken
# for it.
DROP_TIMEOUT = 0.5
# Generous for what must answer: a slow CI machine must not turn a pass into
# a TIMEOUT.
ANSWER_TIMEOUT = 2.0
# Polls for something the kernel does by itself (timeouts, conncount GC).
POLL_DEADLINE = 15.0

MAIL_PORTS = (25, 465, 587)
WEB_PORTS = (80, 443)
EDGECTL_TABLE = "edgectl"
OTHER_TABLE = "othertool"

# The addresses of the standard topology (edgectl.lab.topology._STANDARD),
# named for what they stand for in a test.
DYN4_A, DYN4_B, DYN4_C = "100.64.0.10", "100.64.0.11", "100.64.0.12"
DYN6_A1, DYN6_A2 = "2001:db8:1000:100::10", "2001:db8:1000:100::11"  # one /56
DYN6_A_KEY = "2001:db8:1000:100::/56"
DYN6_B = "2001:db8:1000:200::10"  # another /56
DYN6_B_KEY = "2001:db8:1000:200::/56"
STATIC4, STATIC6 = "100.65.0.10", "2001:db8:2000:100::10"
MX4, MX4_SECOND = "203.0.113.25", "203.0.113.26"
MX6 = "2001:db8:ffff::25"
RELAY4, RELAY6 = "198.51.100.25", "2001:db8:eeee::25"
RESOLVER4, RESOLVER6 = "198.51.100.53", "2001:db8:eeee:53::53"
PORTAL4, PORTAL6 = "198.51.100.80", "2001:db8:eeee:80::80"

# Which lab host holds a source address (the client namespace to connect from).
SOURCE_HOST = {
    **dict.fromkeys((DYN4_A, DYN4_B, DYN4_C), "dyn4"),
    **dict.fromkeys((DYN6_A1, DYN6_A2, DYN6_B), "dyn6"),
    **dict.fromkeys((STATIC4, STATIC6), "static4"),
}


# Servers, by the lab host that holds them.
SERVER_HOST = {
    **dict.fromkeys((MX4, MX4_SECOND, MX6), "mx"),
    **dict.fromkeys((RELAY4, RELAY6), "relay"),
    **dict.fromkeys((RESOLVER4, RESOLVER6), "resolver"),
    **dict.fromkeys((PORTAL4, PORTAL6), "portal"),
}


def check_addresses(topology: Topology) -> None:
    """Fail at once, and clearly, if the lab's addresses moved away from the names above."""
    for address, name in {**SOURCE_HOST, **SERVER_HOST}.items():
        held = topology.hosts[name].addresses
        assert address in held, f"lab host {name} no longer holds {address}: {held}"


# --- policies ----------------------------------------------------------------


def base_policy(revision: int = 1) -> dict[str, Any]:
    """The standard topology as a policy: dynamic v4/v6, static, infrastructure, one relay.

    No rate limits, exemptions or quarantines; tests add what they are about.
    """
    return {
        "gateway": "lab-gw",
        "revision": revision,
        "settings": {
            "hooks": ["forward"],
            "block_action": "reset",
            "resolvers": [RESOLVER4, RESOLVER6],
            "portal": [PORTAL4, PORTAL6],
        },
        "pools": [
            {"name": "dyn4", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]},
            {
                "name": "dyn6",
                "kind": "dynamic",
                "prefixes": ["2001:db8:1000::/40"],
                "subscriber_prefix_len": 56,
            },
            {
                "name": "static",
                "kind": "static",
                "prefixes": ["100.65.0.0/24", "2001:db8:2000::/40"],
                "subscriber_prefix_len": 56,
            },
            {
                "name": "infra",
                "kind": "infrastructure",
                "prefixes": ["198.51.100.0/24", "2001:db8:eeee::/48"],
            },
        ],
        "relays": [{"name": "isp_mx", "prefixes": [RELAY4, RELAY6]}],
        "rate_limits": [],
        "exemptions": [],
        "quarantines": [],
    }


def with_profile(
    policy: dict[str, Any],
    *,
    name: str = "residential",
    new_per_minute: int,
    burst: int,
    pools: tuple[str, ...] = ("dyn4", "dyn6"),
    **extra: Any,
) -> dict[str, Any]:
    """A copy of ``policy`` with one rate-limit profile attached to ``pools``."""
    out = copy.deepcopy(policy)
    profile = {"name": name, "new_per_minute": new_per_minute, "burst": burst, **extra}
    out["rate_limits"] = [*out["rate_limits"], profile]
    for pool in out["pools"]:
        if pool["name"] in pools:
            pool["rate_limit"] = name
    return out


def with_quarantines(policy: dict[str, Any], *entries: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(policy)
    out["quarantines"] = [*out["quarantines"], *entries]
    out["revision"] = out["revision"] + 1
    return out


# --- traffic -----------------------------------------------------------------


def tcp(topology: Topology, src: str, dst: str, port: int, *, expect_drop: bool = False) -> Outcome:
    """One TCP connect from the lab host holding ``src``; closed at once."""
    host = topology.hosts[SOURCE_HOST[src]]
    timeout = DROP_TIMEOUT if expect_drop else ANSWER_TIMEOUT
    return connect(host.ns, dst, port, src=src, timeout=timeout)


Probe = tuple[str, str, int | str]  # (src, dst, TCP port or "udp53")


def outcomes(topology: Topology, probes: list[Probe], *, expect_drop: bool) -> dict[Probe, Outcome]:
    """Run probes concurrently (a dropped SYN costs ``DROP_TIMEOUT``; not one after another).

    Sockets enter their namespace per thread (``in_netns``), so threads are safe.
    """

    def run(probe: Probe) -> Outcome:
        src, dst, port = probe
        if port == "udp53":
            host = topology.hosts[SOURCE_HOST[src]]
            timeout = DROP_TIMEOUT if expect_drop else ANSWER_TIMEOUT
            return udp_query(host.ns, dst, 53, src=src, timeout=timeout)
        assert isinstance(port, int)
        return tcp(topology, src, dst, port, expect_drop=expect_drop)

    with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
        return dict(zip(probes, pool.map(run, probes), strict=True))


def accepted_reaches(listener: Listener, src: str, port: int, expected: int) -> bool:
    """Poll until ``listener`` has accepted ``expected`` connections from ``src`` on ``port``.

    A client's connect returns on the SYN-ACK; the listener thread accepts a
    moment later, so its count is polled, never read once.
    """
    return wait_until(lambda: listener.accepted(src, port=port) == expected, 2.0, 0.005)


@dataclass
class Servers:
    mx: Listener
    relay: Listener
    resolver: Listener
    portal: Listener


@pytest.fixture(scope="module", name="servers")
def servers_fixture(topology: Topology) -> Iterator[Servers]:
    """Listeners on every outside host; they hold accepted connections (for the caps)."""
    with listening(topology) as servers:
        yield servers


@contextlib.contextmanager
def listening(
    topology: Topology, mx_ports: tuple[int, ...] = (*MAIL_PORTS, *WEB_PORTS)
) -> Iterator[Servers]:
    """The standard listeners; a module that runs its own server on an MX port leaves it out."""
    check_addresses(topology)
    hosts = topology.hosts
    opened: list[Listener] = []

    def listen(name: str, tcp_ports: tuple[int, ...], udp_ports: tuple[int, ...] = ()) -> Listener:
        listener = Listener(hosts[name].ns, hosts[name].addresses, tcp_ports, udp_ports=udp_ports)
        opened.append(listener)
        return listener

    try:
        yield Servers(
            mx=listen("mx", mx_ports),
            relay=listen("relay", MAIL_PORTS),
            resolver=listen("resolver", (53,), (53,)),
            portal=listen("portal", WEB_PORTS),
        )
    finally:
        for listener in opened:
            listener.close()


# --- the gateway -------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A finished ``edgectl`` command."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def __str__(self) -> str:
        return f"edgectl {' '.join(self.args)} -> {self.code}\n{self.out}{self.err}"


class Gateway:
    """The lab gateway namespace as edgectl and nft see it, for one test."""

    def __init__(self, topology: Topology, workdir: Path) -> None:
        self.topology = topology
        self.ns = topology.gateway_ns
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self._policies = 0

    # -- edgectl -----------------------------------------------------------

    def policy_file(self, policy: dict[str, Any] | str, suffix: str = ".json") -> Path:
        """Write a policy (a dict as JSON, or TOML text as is) to a fresh file."""
        self._policies += 1
        if isinstance(policy, str):
            path = self.workdir / f"policy-{self._policies}.toml"
            path.write_text(policy)
        else:
            path = self.workdir / f"policy-{self._policies}{suffix}"
            path.write_text(json.dumps(policy, indent=2))
        return path

    def edgectl(self, *args: str) -> Run:
        proc = subprocess.run(
            [EDGECTL, *args], capture_output=True, text=True, timeout=60, check=False
        )
        return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def _kernel_args(self) -> tuple[str, ...]:
        return ("--netns", self.ns, "--state-dir", str(self.state_dir))

    def apply(self, policy: dict[str, Any] | str | Path, *flags: str, check: bool = True) -> Run:
        path = policy if isinstance(policy, Path) else self.policy_file(policy)
        run = self.edgectl("apply", "-f", str(path), *self._kernel_args(), *flags)
        if check:
            assert run.code == 0, str(run)
        return run

    def plan(self, policy: dict[str, Any] | str | Path) -> Run:
        path = policy if isinstance(policy, Path) else self.policy_file(policy)
        return self.edgectl("plan", "-f", str(path), *self._kernel_args(), "--detailed-exitcode")

    def show(self) -> dict[str, Any]:
        run = self.edgectl("show", *self._kernel_args())
        assert run.code == 0, str(run)
        report: dict[str, Any] = json.loads(run.out)
        return report

    def shown_counter(self, name: str) -> int:
        """Packets of one named counter, as ``edgectl show`` reports them."""
        return int(self.show()["counters"][name]["packets"])

    def counter(self, name: str) -> int:
        """Packets of one named counter, read in-process (no CLI start-up per read)."""
        with Dataplane(self.ns) as dataplane:
            counters = dataplane.counters()
        assert name in counters, f"no counter {name}: {sorted(counters)}"
        return counters[name][0]

    # -- nft, inside the gateway namespace only ----------------------------

    def nft(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.ns in self.topology.namespaces()  # never the host's ruleset
        return nft(self.ns, *args, check=check)

    def nft_script(self, script: str) -> None:
        assert self.ns in self.topology.namespaces()
        nft(self.ns, script=script)

    def ruleset(self, *, stateless: bool = False) -> str:
        """``nft list ruleset``; ``stateless`` hides counters and element expiry countdowns."""
        return self.nft(*(["-s"] if stateless else []), "list", "ruleset").stdout

    def table(self, name: str) -> str:
        return self.nft("list", "table", "inet", name).stdout

    def has_table(self, name: str) -> bool:
        return f"table inet {name}\n" in self.nft("list", "tables").stdout

    def generation(self) -> int:
        """The ruleset generation id: every committed nf_tables transaction bumps it."""
        with in_netns(self.ns):
            sock = NfNetlink()
        try:
            return kernel_readback.generation(sock)
        finally:
            sock.close()

    def reset(self) -> None:
        """No edgectl table and no foreign table: the gateway forwards everything."""
        for name in (EDGECTL_TABLE, OTHER_TABLE):
            if self.has_table(name):
                self.nft("delete", "table", "inet", name)


@pytest.fixture(name="gateway")
def gateway_fixture(topology: Topology, servers: Servers, tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(topology, tmp_path)
    gw.reset()
    try:
        yield gw
    finally:
        gw.reset()


# A foreign tool's table: a base chain on the same hook as edgectl's, a set,
# a named counter.  Nothing in the lab matches its rule, so its listing only
# changes if somebody touches it.
OTHER_TOOL_SCRIPT = """\
table inet othertool {
    counter seen {
    }
    set watch {
        type ipv4_addr
        elements = { 192.0.2.7, 192.0.2.9 }
    }
    chain watch_forward {
        type filter hook forward priority 10; policy accept;
        ip daddr @watch counter name seen
    }
}
"""
