"""``edgectl lab``: a whole edgectl system in network namespaces, left running.

``up`` builds two standard lab topologies (gateways ``gw-a`` and ``gw-b``,
each with dynamic IPv4/IPv6 and static subscribers, an outside MX, the ISP
relay, resolver and portal), a controller namespace joined to each gateway
by a management veth, and starts, as daemons (own session, stdin
/dev/null, output to a log file, a pid file each):

* ``hosts``: the outside servers (MX and relay on 25/465/587, portal on
  80/443, resolver on 53) in every gateway's outside namespaces, so a
  refused connection is the gateway's doing, never a closed port;
* ``controller``: ``edgectl controller`` on SQLite inside the controller
  namespace, on ``0.0.0.0:8470`` (``127.0.0.1`` there, and the management
  addresses the gateways reach);
* ``agent-gw-a``/``agent-gw-b``: ``edgectl agent run`` *inside* each gateway
  namespace, talking to the controller across its management veth;
* ``portal-gw-a``/``portal-gw-b``: ``edgectl portal run`` in the controller
  namespace (it reaches the controller on 127.0.0.1 with a portal-role
  token), its listener opened in that gateway's portal host namespace
  (``listen_netns``) on ``PORTAL_PORT``, where the gateway steers
  walled-garden subscribers' plain HTTP to.

A BNG namespace (``<prefix>-bng``, joined to the controller namespace by a
/30 of its own) binds the lab's subscribers: ``up`` sends their
Acct-Starts from there to the controller's RADIUS accounting port, as an
access router would; ``radclient`` run there works the same way.

It then configures pools, the relay, a rate-limit profile, both gateways
(block log to nflog group ``LOG_GROUP``, which each agent reads for its
offenders report) and an exemption through the REST API with a netops token
it creates, binds a few subscriber sessions with Acct-Starts from the BNG
(the controller listens for RADIUS accounting on its end of the BNG link,
the BNG's secret in a generated 0600 clients file), and waits until both
agents report the gateway's revision applied.

Addresses are lab-only: subscribers in 100.64.0.0/10 and 2001:db8::/32,
servers in 203.0.113.0/24 and 198.51.100.0/24, management links in
192.0.2.0/24.  Nothing is added to the root namespace: no veth, address,
route, rule or listening socket; the controller is reached with
``ip netns exec <ctl namespace> curl http://127.0.0.1:8470/...``.

Everything lives under ``/run/edgectl-lab/<name>/`` (mode 0700; tmpfs, so
a reboot clears it together with the namespaces and processes).  ``lab.json``
is written before any namespace exists, so ``down`` always knows what to
remove; topology owner files (``/run/edgectl-lab/<prefix>.owner``) name the
lab's ``hosts`` process once the lab is up, so ``remove_leftovers`` treats a
running lab as alive and a crashed one as leftovers.  Every process the lab
starts carries ``EDGECTL_LAB=<state dir>`` in its environment; ``down``
finds them by that (and by the pid files), so it works after a crash too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.lab import netns
from edgectl.lab.probe import Listener
from edgectl.lab.topology import (
    OWNER_DIR,
    Topology,
    new_prefix,
    remove_leftovers,
    standard_topology,
)
from edgectl.testing.fleet import AgentFiles, create_token, write_private
from edgectl.testing.processes import alive
from edgectl.testing.rest import HttpError, Rest
from edgectl.testing.wait import wait_until

BASE_PREFIX = "elab"
STATE_ROOT = OWNER_DIR
DEFAULT_NAME = "lab"
ENV_MARK = "EDGECTL_LAB"
# How often, and how far apart, a live process whose environment reads empty
# is asked again (see _environ_mark): an execve's window is microseconds.
MARK_RETRIES = 20
MARK_RETRY_S = 0.005
STATE_FILE = "lab.json"
GATEWAYS = ("gw-a", "gw-b")
CONTROLLER_PORT = 8470
CONTROLLER_LOCAL_URL = f"http://127.0.0.1:{CONTROLLER_PORT}"
AGENT_METRICS = "127.0.0.1:9471"  # inside each gateway namespace: no clash
CTL_HOST = "ctl"
MGMT_IFNAME = "mgmt0"
# (controller end, gateway end) of each management /30.
MGMT_LINKS: dict[str, tuple[str, str]] = {
    "gw-a": ("192.0.2.1/30", "192.0.2.2/30"),
    "gw-b": ("192.0.2.5/30", "192.0.2.6/30"),
}
# The lab's BNG: a namespace of its own joined to the controller namespace,
# sending RADIUS accounting for the lab's subscribers like a real access router.
BNG_HOST = "bng"
BNG_NAME = "bng-lab"  # its name in the controller's RADIUS clients file
BNG_LINK = ("192.0.2.9/30", "192.0.2.10/30")  # (controller end, BNG end)
RADIUS_PORT = 1813
RADIUS_TIMEOUT = 20.0
MAIL_PORTS = (25, 465, 587)
# Block rules log to this nflog group, where each gateway's agent listens
# (offenders); nflog groups are per namespace, so both gateways use the same.
LOG_GROUP = 1
START_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# The lab's agents: prompt enough to watch, and the management veths never
# leave this machine, so plain HTTP is allowed (a real fleet uses TLS).
LAB_AGENT: dict[str, object] = {
    "allow_plain_http": True,
    "poll_wait": 25,
    "backoff_min": 0.2,
    "backoff_max": 2,
    "drift_interval": 0.1,
    "report_interval": 5,
    "report_min_gap": 0.5,
}
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")

# The accounts the lab binds to its subscriber hosts (same on both gateways:
# both serve the same pools, like a redundant pair of BNGs).
ACCOUNTS: dict[str, dict[str, str]] = {
    "cust-1001": {"ipv4": "100.64.0.10", "ipv6": "2001:db8:1000:100::/56"},
    "cust-1002": {"ipv4": "100.64.0.11", "ipv6": "2001:db8:1000:200::/56"},
    "cust-1003": {"ipv4": "100.64.0.12"},
    "cust-2001": {"ipv4": "100.65.0.10", "ipv6": "2001:db8:2000:100::/56"},
}
EXEMPT_ACCOUNT = "cust-1003"

# The notice portal's port on the portal host (80/443 there are the lab's
# plain listeners, which stand for other services of the ISP's).
PORTAL_PORT = 8080
PORTAL_START_TIMEOUT = 20.0

# The outside servers: host -> (tcp ports, udp ports).
SERVERS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "mx": (MAIL_PORTS, ()),
    "relay": (MAIL_PORTS, ()),
    "portal": ((80, 443), ()),
    "resolver": ((53,), (53,)),
}


class LabError(RuntimeError):
    """Something the operator must know about; the message says what to do."""


# --- names and state -------------------------------------------------------------


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise LabError(f"lab name {name!r}: [a-z][a-z0-9-], at most 32 characters")
    return name


def lab_dir(name: str) -> Path:
    return STATE_ROOT / check_name(name)


@dataclass(frozen=True)
class LabState:
    """What ``lab.json`` records: enough for ``down``, ``status`` and ``probe``."""

    name: str
    directory: Path
    prefixes: dict[str, str]  # gateway -> topology prefix; the controller namespace is in gw-a's

    @property
    def ctl_ns(self) -> str:
        return f"{self.prefixes[GATEWAYS[0]]}-{CTL_HOST}"

    @property
    def bng_ns(self) -> str:
        return f"{self.prefixes[GATEWAYS[0]]}-{BNG_HOST}"

    @property
    def radius_server(self) -> str:
        return BNG_LINK[0].split("/")[0]

    @property
    def radius_secret_file(self) -> Path:
        return self.directory / "radius.secret"

    def radius_secret(self) -> str:
        return self.radius_secret_file.read_text().strip()

    def gateway_ns(self, gateway: str) -> str:
        return f"{self.prefixes[gateway]}-gw"

    def host_ns(self, gateway: str, host: str) -> str:
        return f"{self.prefixes[gateway]}-{host}"

    def topology(self, gateway: str) -> Topology:
        return standard_topology(self.prefixes[gateway])

    @property
    def token_file(self) -> Path:
        return self.directory / "netops.token"

    @property
    def abuse_token_file(self) -> Path:
        return self.directory / "abuse.token"

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def pid_file(self, process: str) -> Path:
        return self.directory / f"{process}.pid"

    def log_file(self, process: str) -> Path:
        return self.directory / f"{process}.log"

    def mgmt_url(self, gateway: str) -> str:
        ctl_end = MGMT_LINKS[gateway][0].split("/")[0]
        return f"http://{ctl_end}:{CONTROLLER_PORT}"

    def save(self) -> None:
        data = {"name": self.name, "prefixes": self.prefixes}
        write_private(self.directory / STATE_FILE, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, name: str) -> LabState:
        directory = lab_dir(name)
        try:
            data = json.loads((directory / STATE_FILE).read_text())
            prefixes = {str(k): str(v) for k, v in dict(data["prefixes"]).items()}
        except FileNotFoundError:
            raise LabError(f"no lab {name!r} is up (no {directory / STATE_FILE})") from None
        except (ValueError, KeyError, TypeError) as error:
            raise LabError(
                f"{directory / STATE_FILE} is unreadable ({error}); `edgectl lab down` removes it"
            ) from None
        if set(prefixes) != set(GATEWAYS):
            raise LabError(f"{directory / STATE_FILE}: gateways {sorted(prefixes)}")
        return cls(name, directory, prefixes)


# --- processes ---------------------------------------------------------------------


def _ip_command() -> str:
    found = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise LabError("`ip` (iproute2) not found; ./scripts/setup.sh installs it")
    return found


def _spawn(state: LabState, process: str, argv: list[str], ns: str | None = None) -> int:
    """Start ``argv`` as a daemon (own session, no terminal, log file, pid file)."""
    command = [_ip_command(), "netns", "exec", ns, *argv] if ns is not None else argv
    env = dict(os.environ)
    env[ENV_MARK] = str(state.directory)
    env["PYTHONUNBUFFERED"] = "1"
    fd = os.open(state.log_file(process), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    # The child outlives us; nobody will wait() for it here, so stop Popen
    # from warning about it at exit.
    proc.returncode = 0
    write_private(state.pid_file(process), f"{proc.pid}\n")
    return proc.pid


def _environ_mark(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        for _ in range(MARK_RETRIES):
            if raw or not alive(pid):
                break
            # Mid-execve (``ip netns exec`` execs the program) the environment
            # reads empty for an instant: a live process looked gone (`lab up`
            # failed with "exited while waiting"), or `lab down` missed it.
            time.sleep(MARK_RETRY_S)
            raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(ENV_MARK.encode() + b"="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def lab_pids(directory: Path) -> set[int]:
    """Every live process this lab started: by environment mark (and pid files)."""
    mark = str(directory)
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _environ_mark(int(entry.name)) == mark:
            found.add(int(entry.name))
    for pid_file in directory.glob("*.pid") if directory.is_dir() else ():
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            if _environ_mark(pid) == mark:  # never a reused pid of someone else
                found.add(pid)
    found.discard(os.getpid())
    return {pid for pid in found if alive(pid)}


def process_pid(state: LabState, process: str) -> int | None:
    """The pid of the lab's ``process`` if it still runs."""
    try:
        pid = int(state.pid_file(process).read_text().strip())
    except (OSError, ValueError):
        return None
    if _environ_mark(pid) != str(state.directory) or not alive(pid):
        return None
    return pid


def _all_gone(pids: frozenset[int]) -> bool:
    return not any(alive(pid) for pid in pids)


def _stop_all(pids: set[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM each, wait with a deadline, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        signalled = frozenset(pids)
        for pid in signalled:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        wait_until(functools.partial(_all_gone, signalled), timeout, 0.05)
        pids = {p for p in signalled if alive(p)}
        if not pids:
            return
    raise LabError(f"processes {sorted(pids)} did not stop")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])


# --- HTTP inside the controller namespace ----------------------------------------------


class ApiError(LabError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body}")
        self.status = status


def rest(state: LabState, timeout: float = 10.0) -> Rest:
    """The lab controller's API, reached from inside its namespace."""
    return Rest(CONTROLLER_LOCAL_URL, state.token(), netns=state.ctl_ns, timeout=timeout)


def api(state: LabState, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """One REST call to the lab controller; an error status is a LabError the CLI shows."""
    try:
        return rest(state, timeout).call(method, path, body)
    except HttpError as error:
        raise ApiError(method, path, error.status, error.body) from error


def _healthy(state: LabState) -> bool:
    return Rest(CONTROLLER_LOCAL_URL, netns=state.ctl_ns).healthy()


# --- up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Up:
    """What ``up`` made, for the CLI to print."""

    state: LabState
    token: str
    revisions: dict[str, int]
    pids: dict[str, int]
    abuse_token: str = ""  # for the console's sign-in and the abuse desk's CLI verbs


def up(
    name: str = DEFAULT_NAME,
    *,
    log: Callable[[str], None] = lambda _: None,
    database_url: str | None = None,
) -> Up:
    """Build the lab and start its processes; on any failure remove everything again.

    The controller's database is a SQLite file in the lab's directory unless
    ``database_url`` names another (an empty one: a PostgreSQL database).
    """
    if os.geteuid() != 0:
        raise LabError("lab up needs root (network namespaces, nftables)")
    directory = lab_dir(name)
    if directory.exists():
        if lab_pids(directory):
            raise LabError(f"lab {name!r} is already up; `edgectl lab down` first")
        log(f"removing what an earlier lab {name!r} left behind")
        down(name)
    STATE_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)
    state = LabState(name, directory, {gw: new_prefix(BASE_PREFIX) for gw in GATEWAYS})
    state.save()  # before any namespace: `down` can always find them
    try:
        return _up(state, log, database_url or f"sqlite:///{directory / 'controller.db'}")
    except BaseException:
        # The files go with the lab: show what the logs said before they do.
        for path in sorted(directory.glob("*.log")):
            log(f"{path.name}, last lines:\n{_tail(path)}")
        down(name)
        raise


def _agents() -> list[str]:
    return [f"agent-{gw}" for gw in GATEWAYS]


def _portals() -> list[str]:
    return [f"portal-{gw}" for gw in GATEWAYS]


def _up(state: LabState, log: Callable[[str], None], database_url: str) -> Up:
    log("building namespaces")
    topologies = {gw: state.topology(gw) for gw in GATEWAYS}
    for topology in topologies.values():
        topology.build()
    _build_management(state)

    log("creating the controller database and a netops token")
    token = create_token(database_url, "lab", "netops")
    write_private(state.token_file, token + "\n")
    abuse_token = create_token(database_url, "lab-abuse", "abuse")
    write_private(state.abuse_token_file, abuse_token + "\n")
    portal_token = create_token(database_url, "lab-portal", "portal")
    write_private(state.directory / "portal.token", portal_token + "\n")
    secret = secrets.token_hex(16)
    write_private(state.radius_secret_file, secret + "\n")
    clients = state.directory / "radius-clients.toml"
    write_private(
        clients,
        f'[[client]]\nname = "{BNG_NAME}"\naddress = "{BNG_LINK[1].split("/")[0]}"\n'
        f'secret = "{secret}"\n',
    )
    controller_config = state.directory / "controller.toml"
    write_private(
        controller_config,
        "[controller]\n"
        f'database_url = "{database_url}"\n'
        "# inside the lab controller namespace only: 127.0.0.1 and the management links\n"
        'host = "0.0.0.0"\n'
        f"port = {CONTROLLER_PORT}\n"
        "# the management veths never leave this machine (a real fleet uses TLS)\n"
        "allow_plain_http = true\n"
        "poll_interval = 0.2\n"
        "sweep_interval = 1.0\n"
        'log_level = "info"\n'
        "\n[controller.radius]\n"
        f'listen = "{state.radius_server}:{RADIUS_PORT}"\n'
        f'clients = "{clients}"\n',
    )

    log("starting the outside servers, the controller and two agents")
    pids: dict[str, int] = {}
    pids["hosts"] = _spawn(
        state, "hosts", [sys.executable, "-m", "edgectl.lab.fleet", "hosts", state.name]
    )
    pids["controller"] = start_controller(state)
    ready = state.directory / "hosts.ready"
    _wait(lambda: ready.exists(), state, "hosts", "the outside servers to listen")
    _wait(lambda: _healthy(state), state, "controller", "the controller to answer /healthz")
    # From now on the lab counts as alive for remove_leftovers while its servers run.
    for prefix in state.prefixes.values():
        (OWNER_DIR / f"{prefix}.owner").write_text(f"{pids['hosts']}\n")

    log("configuring pools, relay, rate limit, gateways and sessions through the API")
    agent_tokens = _configure(state)
    for gateway in GATEWAYS:
        pids[f"agent-{gateway}"] = _start_agent(state, gateway, agent_tokens[gateway])
        pids[f"portal-{gateway}"] = _start_portal(state, gateway)
    for gateway in GATEWAYS:
        _wait(
            functools.partial(_portal_answers, state, gateway),
            state,
            f"portal-{gateway}",
            f"{gateway}'s notice portal to answer",
            PORTAL_START_TIMEOUT,
        )

    log("waiting for both agents to apply their gateway's revision")
    revisions: dict[str, int] = {}
    for gateway in GATEWAYS:

        def applied(gateway: str = gateway) -> bool:
            info = api(state, "GET", f"/v1/gateways/{gateway}")
            status = info.get("status") or {}
            if info.get("converged") and status.get("applied_revision") == info["revision"]:
                revisions[gateway] = int(info["revision"])
                return True
            return False

        _wait(applied, state, f"agent-{gateway}", f"{gateway}'s agent to apply", CONVERGE_TIMEOUT)
    return Up(state, token, revisions, pids, abuse_token)


def start_controller(state: LabState) -> int:
    """``edgectl controller`` in the controller namespace (also to restart a killed one)."""
    config = state.directory / "controller.toml"
    argv = [sys.executable, "-m", "edgectl.controller", "controller", "serve", "--config"]
    return _spawn(state, "controller", [*argv, str(config)], state.ctl_ns)


def wait_healthy(state: LabState, timeout: float = START_TIMEOUT) -> None:
    _wait(
        lambda: _healthy(state), state, "controller", "the controller to answer /healthz", timeout
    )


def _wait(
    condition: Callable[[], bool],
    state: LabState,
    process: str,
    what: str,
    timeout: float = START_TIMEOUT,
) -> None:
    def check() -> bool:
        if condition():
            return True
        if process_pid(state, process) is None:
            raise LabError(
                f"{process} exited while waiting for {what}:\n" + _tail(state.log_file(process))
            )
        return False

    if not wait_until(check, timeout, 0.1):
        raise LabError(
            f"timed out after {timeout:.0f}s waiting for {what}:\n" + _tail(state.log_file(process))
        )


def _start_portal(state: LabState, gateway: str) -> int:
    """``edgectl portal run`` in the controller namespace, listening in the portal host's."""
    portal = state.topology(gateway).hosts["portal"]
    config = state.directory / f"portal-{gateway}.toml"
    write_private(
        config,
        "[portal]\n"
        f'controller_url = "{CONTROLLER_LOCAL_URL}"\n'
        f'token_file = "{state.directory / "portal.token"}"\n'
        f'listen = "[::]:{PORTAL_PORT}"\n'
        "# (both families: the gateway steers IPv4 and IPv6 HTTP here)\n"
        "# the subscriber-facing side: the portal host behind this gateway\n"
        f'listen_netns = "{state.host_ns(gateway, "portal")}"\n'
        f'public_url = "http://{portal.ipv4}:{PORTAL_PORT}/"\n'
        'default_language = "ja"\n'
        'support = "0120-000-000 (lab)"\n',
    )
    argv = [sys.executable, "-m", "edgectl.portal", "run", "--config", str(config)]
    return _spawn(state, f"portal-{gateway}", argv, state.ctl_ns)


def _portal_answers(state: LabState, gateway: str) -> bool:
    from edgectl.lab.web import Reply, http_request

    address = state.topology(gateway).hosts["portal"].ipv4
    ns = state.host_ns(gateway, "portal")
    reply = http_request(ns, address, PORTAL_PORT, path="/.edgectl/healthz", timeout=1.0)
    return isinstance(reply, Reply) and reply.status == 200


def _build_management(state: LabState) -> None:
    """The controller namespace and a /30 veth from it to each gateway."""
    ctl = state.ctl_ns
    if netns.exists(ctl):
        raise FileExistsError(f"namespace {ctl} exists; not ours to reuse")
    netns.create(ctl)
    with netns.rtnl(ctl) as link:
        link.set_up("lo")
        for gateway in GATEWAYS:
            ctl_end, gw_end = MGMT_LINKS[gateway]
            ifname = f"mgmt-{gateway.removeprefix('gw-')}"
            link.add_veth(ifname, state.gateway_ns(gateway), MGMT_IFNAME)
            link.add_address(ifname, ctl_end)
            link.set_up(ifname)
            with netns.rtnl(state.gateway_ns(gateway)) as gw:
                gw.add_address(MGMT_IFNAME, gw_end)
                gw.set_up(MGMT_IFNAME)
    netns.create(state.bng_ns)
    with netns.rtnl(ctl) as link:
        link.add_veth("to-bng", state.bng_ns, MGMT_IFNAME)
        link.add_address("to-bng", BNG_LINK[0])
        link.set_up("to-bng")
    with netns.rtnl(state.bng_ns) as bng:
        bng.set_up("lo")
        bng.add_address(MGMT_IFNAME, BNG_LINK[1])
        bng.set_up(MGMT_IFNAME)


def _configure(state: LabState) -> dict[str, str]:
    """The lab's catalogue, gateways and sessions; returns each gateway's agent token."""
    a = state.topology(GATEWAYS[0])
    pools = dict(a.pools)
    hosts = a.hosts
    calls: list[tuple[str, str, dict[str, Any]]] = [
        (
            "POST",
            "/v1/rate-limits",
            {
                "name": "residential",
                "new_per_minute": 30,
                "burst": 10,
                "concurrent": 10,
                "per_destination": 5,
            },
        ),
        (
            "POST",
            "/v1/pools",
            {
                "name": "home_v4",
                "kind": "dynamic",
                "prefixes": [pools["dyn4"]],
                "rate_limit": "residential",
            },
        ),
        (
            "POST",
            "/v1/pools",
            {
                "name": "home_v6",
                "kind": "dynamic",
                "prefixes": [pools["dyn6"]],
                "subscriber_prefix_len": 56,
                "rate_limit": "residential",
            },
        ),
        (
            "POST",
            "/v1/pools",
            {
                "name": "business",
                "kind": "static",
                "prefixes": [pools["static4"], pools["static6"]],
                "subscriber_prefix_len": 56,
            },
        ),
        (
            "POST",
            "/v1/pools",
            {
                "name": "isp_servers",
                "kind": "infrastructure",
                "prefixes": ["198.51.100.0/24", "2001:db8:eeee::/48"],
            },
        ),
        (
            "POST",
            "/v1/relays",
            {
                "name": "isp_mx",
                "prefixes": list(hosts["relay"].ipv4_all[:1]) + list(hosts["relay"].ipv6_all[:1]),
            },
        ),
    ]
    for method, path, body in calls:
        api(state, method, path, body)
    settings = {
        "block_action": "reset",
        "resolvers": [hosts["resolver"].ipv4, hosts["resolver"].ipv6],
        "portal": [hosts["portal"].ipv4, hosts["portal"].ipv6],
        "log_group": LOG_GROUP,
        # Walled-garden HTTP goes to the notice portal, both families (the
        # lab's portal listens on [::], which takes IPv4 too).
        "steer_http_4": hosts["portal"].ipv4,
        "steer_http_6": hosts["portal"].ipv6,
        "steer_http_port": PORTAL_PORT,
    }
    agent_tokens: dict[str, str] = {}
    for gateway in GATEWAYS:
        created = api(
            state,
            "POST",
            "/v1/gateways",
            {
                "name": gateway,
                "pools": ["home_v4", "home_v6", "business", "isp_servers"],
                "settings": settings,
            },
        )
        agent_tokens[gateway] = str(created["agent_token"])
    starts = [
        {
            "Acct-Status-Type": "Start",
            "Acct-Session-Id": f"lab-{account}",
            "User-Name": account,
            **({"Framed-IP-Address": session["ipv4"]} if "ipv4" in session else {}),
            **({"Delegated-IPv6-Prefix": session["ipv6"]} if "ipv6" in session else {}),
        }
        for account, session in ACCOUNTS.items()
    ]
    accounting(state, starts)
    api(
        state,
        "POST",
        "/v1/exemptions",
        {
            "account": EXEMPT_ACCOUNT,
            "ticket": "LAB-1",
            "reason": "runs its own mail server (lab example of an OP25B exemption)",
        },
    )
    return agent_tokens


def accounting(
    state: LabState, requests: list[dict[str, Any]], timeout: float = RADIUS_TIMEOUT
) -> None:
    """Send Accounting-Requests from the lab's BNG namespace, as a NAS does: each is
    retransmitted every second until the controller answers it (i.e. has stored it)."""
    from edgectl.controller.radius import codec

    if len(requests) > 256:
        raise LabError("at most 256 accounting requests at once (one Identifier each)")
    words = codec.dictionary()
    secret = state.radius_secret().encode()
    packets = {
        identifier: codec.encode_request(secret, identifier, attributes, words)
        for identifier, attributes in enumerate(requests)
    }
    with netns.in_netns(state.bng_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.connect((state.radius_server, RADIUS_PORT))
        deadline = time.monotonic() + timeout
        waiting = dict(packets)
        while waiting:
            if time.monotonic() > deadline:
                raise LabError(
                    f"the controller answered {len(packets) - len(waiting)} of {len(packets)} "
                    f"accounting requests in {timeout:.0f}s:\n"
                    + _tail(state.log_file("controller"))
                )
            for data in waiting.values():
                # An ICMP port unreachable from an earlier send surfaces here:
                # the datagram is lost like any other and sent again next round.
                with contextlib.suppress(ConnectionRefusedError):
                    sock.send(data)
            resend = time.monotonic() + 1.0
            while waiting and time.monotonic() < resend:
                sock.settimeout(max(0.01, resend - time.monotonic()))
                try:
                    reply = sock.recv(4096)
                except (TimeoutError, ConnectionRefusedError):
                    continue
                request = waiting.get(reply[1]) if len(reply) >= 20 else None
                if request is not None and codec.is_response_to(reply, request, secret):
                    del waiting[reply[1]]


def _start_agent(state: LabState, gateway: str, token: str) -> int:
    config = AgentFiles(state.directory / gateway).write(
        token=token,
        controller_url=state.mgmt_url(gateway),
        gateway=gateway,
        # The agent runs inside this namespace already; naming it keeps its
        # kernel handle there even if it were started elsewhere by mistake.
        netns=state.gateway_ns(gateway),
        metrics_listen=AGENT_METRICS,
        settings=LAB_AGENT,
    )
    return _spawn(
        state,
        f"agent-{gateway}",
        [sys.executable, "-m", "edgectl.agent.daemon", "run", "--config", str(config)],
        state.gateway_ns(gateway),
    )


# --- down ------------------------------------------------------------------------------


def down(name: str = DEFAULT_NAME) -> list[str]:
    """Stop the lab's processes, delete its namespaces and files; idempotent.

    Works from ``lab.json`` and the environment mark of processes, so a lab
    whose ``up`` crashed half-way goes as completely as a healthy one.  Also
    removes namespaces of other ``elab-*`` runs whose owner is dead.
    Returns what it did, one line each.
    """
    if os.geteuid() != 0:
        raise LabError("lab down needs root")
    directory = lab_dir(name)
    done: list[str] = []
    pids = lab_pids(directory)
    if pids:
        # Agents first: the controller's graceful stop would otherwise wait
        # out their parked long-polls.
        agents = {p for p in pids if "edgectl.agent" in _cmdline(p)}
        _stop_all(agents)
        _stop_all(pids - agents)
        done.append(f"stopped {len(pids)} processes")
    prefixes: list[str] = []
    with contextlib.suppress(LabError):
        prefixes = list(LabState.load(name).prefixes.values())
    for prefix in prefixes:
        mine = [n for n in netns.list_namespaces() if n.startswith(prefix + "-")]
        for ns in mine:
            if netns.delete(ns):
                done.append(f"deleted namespace {ns}")
        (OWNER_DIR / f"{prefix}.owner").unlink(missing_ok=True)
    if directory.exists():
        shutil.rmtree(directory)
        done.append(f"removed {directory}")
    done.extend(f"deleted leftover namespace {ns}" for ns in remove_leftovers(BASE_PREFIX))
    return done


# --- status and probe -------------------------------------------------------------------


def status(name: str = DEFAULT_NAME) -> tuple[bool, list[str]]:
    """(healthy, lines): processes, namespaces, each gateway's revision vs applied."""
    state = LabState.load(name)
    ok = True
    lines = [f"lab {name!r}: state dir {state.directory}"]
    for process in ("hosts", "controller", *_agents(), *_portals()):
        pid = process_pid(state, process)
        ok = ok and pid is not None
        shown = f"pid {pid}" if pid is not None else "NOT RUNNING"
        lines.append(f"  {process:<12} {shown:<12} log {state.log_file(process)}")
    present = set(netns.list_namespaces())
    expected = [state.ctl_ns, state.bng_ns] + [
        ns for gw in GATEWAYS for ns in state.topology(gw).namespaces()
    ]
    missing = [ns for ns in expected if ns not in present]
    ok = ok and not missing
    lines.append(
        f"  namespaces   {len(expected) - len(missing)}/{len(expected)} present"
        + (f", missing {', '.join(missing)}" if missing else "")
    )
    if process_pid(state, "controller") is None:
        return False, lines
    for gateway in GATEWAYS:
        info = api(state, "GET", f"/v1/gateways/{gateway}")
        applied = (info.get("status") or {}).get("applied_revision")
        converged = bool(info.get("converged"))
        ok = ok and converged
        lines.append(
            f"  {gateway:<12} revision {info['revision']}, applied {applied}"
            + ("" if converged else "  (NOT converged)")
        )
    return ok, lines


def resolve_namespace(name: str, where: str) -> str:
    """``gw-a/dyn4`` (gateway/host of the lab) or a namespace of the lab, to its namespace."""
    state = LabState.load(name)
    if "/" in where:
        gateway, host = where.split("/", 1)
        if gateway not in state.prefixes:
            raise LabError(f"{where!r}: gateways are {', '.join(GATEWAYS)}")
        hosts = state.topology(gateway).hosts
        if host == "gw":
            return state.gateway_ns(gateway)
        if host not in hosts:
            raise LabError(f"{where!r}: hosts are gw, {', '.join(hosts)}")
        return state.host_ns(gateway, host)
    if any(where.startswith(p + "-") for p in state.prefixes.values()) and netns.exists(where):
        return where
    raise LabError(f"{where!r}: expected GATEWAY/HOST, e.g. gw-a/dyn4")


# --- the outside servers (a daemon of its own) ------------------------------------------


@contextlib.contextmanager
def _servers(state: LabState) -> Iterator[list[Listener]]:
    listeners: list[Listener] = []
    try:
        for gateway in GATEWAYS:
            topology = state.topology(gateway)
            for host_name, (tcp, udp) in SERVERS.items():
                host = topology.hosts[host_name]
                ns = state.host_ns(gateway, host_name)
                listeners.append(Listener(ns, host.addresses, tcp, udp_ports=udp, hold=False))
        yield listeners
    finally:
        for listener in listeners:
            with contextlib.suppress(Exception):
                listener.close()


def serve_hosts(name: str) -> int:
    """Serve the outside hosts of lab ``name`` until SIGTERM/SIGINT."""
    state = LabState.load(name)
    stop = threading.Event()

    def on_signal(_signo: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with _servers(state) as listeners:
        write_private(state.directory / "hosts.ready", f"{len(listeners)} listeners\n")
        print(f"serving {len(listeners)} outside hosts", flush=True)
        while not stop.wait(1.0):
            pass
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "hosts":
        sys.exit(serve_hosts(sys.argv[2]))
    print("usage: python -m edgectl.lab.fleet hosts LAB-NAME", file=sys.stderr)
    sys.exit(2)
