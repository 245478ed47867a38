"""A small fleet on this machine for the Ansible tests: hosts reached over real SSH.

* an ``ops`` namespace is the Ansible control node: ``ansible-playbook`` runs in
  it and holds a bridge, the management network 192.0.2.0/24;
* a ``ctl`` namespace is the controller host (192.0.2.10) on SQLite - or, with
  ``Fleet(controllers=CONTROLLER_PAIR, postgresql=True)``, two controller hosts
  ``ctl-1`` and ``ctl-2`` (192.0.2.10, .11) and a ``db`` namespace (192.0.2.5)
  where a throwaway PostgreSQL server (``edgectl.testing.pgserver``) listens on
  the management network only and wants a password over TCP; the controllers'
  DSN, password included, reaches Ansible as an ansible-vault encrypted
  ``group_vars`` file next to the inventory, opened with a password file;
* two standard lab topologies (``edgectl.lab.topology``) give two gateways,
  ``gw-a`` and ``gw-b``, each with its subscribers and servers; their gateway
  namespaces join the management bridge as 192.0.2.21 and .22;
* every host runs its own ``sshd -D`` (key auth, a generated key, host keys
  pinned in a known_hosts file) on its management address.

Namespaces share one file system, so each host gets its own path prefix
(``edgectl_*_root``) and its own service user; the playbooks run with one fork
because the hosts also share one /etc/passwd and one dpkg database.

No systemd runs here: the tests start each service the way its rendered
unit says (ExecStart, User, Group, UMask, the capability sets) with setpriv,
inside the host's namespace.  Every process is tracked and killed, every
namespace deleted, every user removed, every wait is a poll with a deadline.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgectl import __version__
from edgectl.lab import netns
from edgectl.lab.probe import Listener
from edgectl.lab.topology import OWNER_DIR, Topology, new_prefix, standard_topology
from edgectl.testing import pgserver
from edgectl.testing.processes import stop
from edgectl.testing.rest import Rest
from edgectl.testing.wait import wait_until

BASE_PREFIX = "ectl-t"  # netns-tests/conftest.py removes leftovers of dead runs
REPO = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
MGMT_NET = "192.0.2"
CONTROLLER_ADDRESS = f"{MGMT_NET}.10"
OPS_ADDRESS = f"{MGMT_NET}.1"
DATABASE_ADDRESS = f"{MGMT_NET}.5"
# Controller hosts by name: one on SQLite (the default), or two on PostgreSQL.
CONTROLLERS = {"ctl": CONTROLLER_ADDRESS}
CONTROLLER_PAIR = {"ctl-1": CONTROLLER_ADDRESS, "ctl-2": f"{MGMT_NET}.11"}
GATEWAYS = {"gw-a": f"{MGMT_NET}.21", "gw-b": f"{MGMT_NET}.22"}
CONTROLLER_PORT = 8470
# The controllers' PostgreSQL role and database (the DSN's password is random per run).
DATABASE_ROLE = "edgectl"
DATABASE_NAME = "edgectl"
PLAYBOOK_TIMEOUT = 600.0
START_TIMEOUT = 30.0
# Directories every "host" has before Ansible runs (a real host has them too).
SKELETON = ("etc/systemd/system", "opt", "var/lib", "var/cache")
_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.M,
)


def gateway_settings() -> dict[str, Any]:
    """Every gateway setting the dataplane takes, as the inventory gives them.

    Values that keep the converge's checks meaningful (forward hook, TCP
    reset, the standard mail ports) but differ from the defaults where they
    can, so that reaching the controller is visible.
    """
    return {
        "hooks": ["forward"],
        "block_action": "reset",
        "mail_ports": [25, 465, 587, 2525],
        "op25b_ports": [25, 2525],
        "log_group": 25,
        "log_per_second": 20,
        "resolvers": ["198.51.100.53/32"],
        "portal": ["198.51.100.80/32"],
        "meter_size": 131072,
        "track_non_mail": True,
    }


def venv_tool(name: str) -> Path:
    return VENV_BIN / name


def controller_url(address: str) -> str:
    return f"https://{address}:{CONTROLLER_PORT}"


def _private_file(path: Path, text: str) -> None:
    """Write ``text`` to a new file that only its owner (root) can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _run(argv: list[str], timeout: float = 60.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def _check(argv: list[str], timeout: float = 60.0) -> str:
    done = _run(argv, timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: exit {done.returncode}\n{done.stderr}")
    return done.stdout


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host from ansible-playbook's output."""
    return {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in _RECAP.finditer(output)
    }


@dataclass
class Unit:
    """The [Service] lines of a rendered unit that say how to start it."""

    path: Path
    exec_start: list[str]
    # ExecStartPre, and whether its failure is ignored (a leading "-").
    exec_start_pre: list[str] | None
    pre_may_fail: bool
    user: str
    group: str
    umask: int
    ambient: list[str]
    bounding: list[str]
    no_new_privileges: bool

    @classmethod
    def parse(cls, path: Path) -> Unit:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        # systemd allows repeated keys (SystemCallFilter=...); keep the last, we do not need them.
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(path.read_text())
        service = parser["Service"]
        pre = service.get("ExecStartPre")
        return cls(
            path=path,
            exec_start=shlex.split(service["ExecStart"]),
            exec_start_pre=None if pre is None else shlex.split(pre.removeprefix("-")),
            pre_may_fail=pre is not None and pre.startswith("-"),
            user=service["User"],
            group=service["Group"],
            umask=int(service.get("UMask", "0022"), 8),
            ambient=service.get("AmbientCapabilities", "").split(),
            bounding=service.get("CapabilityBoundingSet", "").split(),
            no_new_privileges=service.get("NoNewPrivileges", "no") == "yes",
        )

    def command(self, ns: str, exec_line: list[str] | None = None) -> list[str]:
        """ExecStart (or ``exec_line``) in namespace ``ns``, as User/Group with the unit's caps."""

        def caps(names: list[str]) -> str:
            return ",".join(["-all", *(f"+{n.lower().removeprefix('cap_')}" for n in names)])

        argv = [
            "ip",
            "netns",
            "exec",
            ns,
            "setpriv",
            f"--reuid={self.user}",
            f"--regid={self.group}",
            "--init-groups",
            f"--inh-caps={caps(self.ambient)}",
            f"--ambient-caps={caps(self.ambient)}",
            f"--bounding-set={caps(self.bounding)}",
        ]
        if self.no_new_privileges:
            argv.append("--no-new-privs")
        return [*argv, "--", *(self.exec_start if exec_line is None else exec_line)]


@dataclass
class Service:
    name: str
    ns: str
    unit: Unit
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        umask = self.unit.umask
        with self.log.open("ab") as log:
            if self.unit.exec_start_pre is not None:
                # systemd runs ExecStartPre to completion before ExecStart.
                pre = subprocess.run(
                    self.unit.command(self.ns, self.unit.exec_start_pre),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=lambda: os.umask(umask),
                    timeout=120,
                    check=False,
                )
                assert pre.returncode == 0 or self.unit.pre_may_fail, f"{self.name}: ExecStartPre"
            self.proc = subprocess.Popen(
                self.unit.command(self.ns),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: os.umask(umask),  # the unit's UMask=
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, as systemd stops a unit, then SIGKILL after ``grace``."""
        stop(self.proc, grace=grace)

    def kill(self) -> None:
        """SIGKILL: the host's process dies without a goodbye (a crash, an OOM kill)."""
        stop(self.proc, signal.SIGKILL)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Fleet:
    """The namespaces, sshds, inventory and services of one test module."""

    # Controller hosts (name -> management address); the first one registers
    # the gateways and applies the catalogue.
    controllers: dict[str, str] = field(default_factory=lambda: dict(CONTROLLERS))
    # The controllers share one PostgreSQL database (DSN from Vault), else each its SQLite file.
    postgresql: bool = False
    token: str = field(default_factory=lambda: new_prefix(BASE_PREFIX).rsplit("-", 1)[1])
    workdir: Path = field(init=False)
    mgmt_prefix: str = field(init=False)
    topologies: dict[str, Topology] = field(init=False, default_factory=dict)
    sshd: dict[str, subprocess.Popen[bytes]] = field(init=False, default_factory=dict)
    services: dict[str, Service] = field(init=False, default_factory=dict)
    database: pgserver.Server | None = field(init=False, default=None)
    # Known to the test (to look for it where it must not be), else only in Vault.
    database_password: str = field(init=False, default="")
    _namespaces: list[str] = field(init=False, default_factory=list)
    _made_run_sshd: bool = field(init=False, default=False)
    _closing: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        self.mgmt_prefix = f"{BASE_PREFIX}-{self.token}"
        # Not under pytest's tmp_path: that is 0700 root, and the services run
        # as their own users and must reach their files.
        self.workdir = Path(tempfile.mkdtemp(prefix=f"edgectl-ansible-{self.token}-"))
        self.workdir.chmod(0o755)

    # --- names ---------------------------------------------------------------

    @property
    def ops_ns(self) -> str:
        return f"{self.mgmt_prefix}-ops"

    @property
    def db_ns(self) -> str:
        return f"{self.mgmt_prefix}-db"

    @property
    def first_controller(self) -> str:
        return next(iter(self.controllers))

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host Ansible manages: the controllers, then the gateways."""
        return (*self.controllers, *GATEWAYS)

    def ns(self, host: str) -> str:
        if host in self.controllers:
            return f"{self.mgmt_prefix}-{host}"
        return self.gw_ns(host)

    def gw_ns(self, gateway: str) -> str:
        return self.topologies[gateway].gateway_ns

    def url(self, controller: str) -> str:
        return controller_url(self.controllers[controller])

    @property
    def vault_password_file(self) -> Path:
        return self.workdir / "vault-password"

    @property
    def vault_file(self) -> Path:
        # group_vars next to the inventory file: Ansible loads it for the group's hosts.
        return self.workdir / "group_vars" / "edgectl_controller" / "vault.yml"

    def root(self, host: str) -> Path:
        return self.workdir / "hosts" / host

    def user(self, host: str) -> str:
        # Shared /etc/passwd: one user per "host", at most 32 characters.
        return f"ectl-{self.token}-{host.replace('gw-', 'g')}"

    def bootstrap_token(self, controller: str) -> str:
        """The netops token the controller role left on ``controller`` (root-only)."""
        token_file = self.root(controller) / "etc/edgectl/bootstrap-netops.token"
        return token_file.read_text().strip()

    @property
    def ca_file(self) -> Path:
        return self.workdir / "tls" / "ca.pem"

    # --- build ---------------------------------------------------------------

    def build(self) -> None:
        for host in self.hosts:
            for sub in SKELETON:
                (self.root(host) / sub).mkdir(parents=True, exist_ok=True)
        self._management_network()
        self._tls()
        self._ssh()
        if self.postgresql:
            self._database()
            self._vault()
        self.write_inventory()

    def _ns(self, name: str) -> None:
        self._namespaces.append(name)
        netns.create(name)

    def _ip(self, *args: str) -> None:
        _check(["ip", *args])

    def _management_network(self) -> None:
        # The owner file lets remove_leftovers clear these namespaces after a crash.
        OWNER_DIR.mkdir(mode=0o755, exist_ok=True)
        (OWNER_DIR / f"{self.mgmt_prefix}.owner").write_text(f"{os.getpid()}\n")
        self._ns(self.ops_ns)
        members = {host: (self.ns(host), address) for host, address in self.controllers.items()}
        for host in self.controllers:
            self._ns(self.ns(host))
        if self.postgresql:
            self._ns(self.db_ns)
            members["db"] = (self.db_ns, DATABASE_ADDRESS)
        for gateway in GATEWAYS:
            topo = standard_topology(new_prefix(BASE_PREFIX))
            self.topologies[gateway] = topo
            topo.build()
        ops = self.ops_ns
        self._ip("-n", ops, "link", "add", "br0", "type", "bridge")
        self._ip("-n", ops, "addr", "add", f"{OPS_ADDRESS}/24", "dev", "br0")
        self._ip("-n", ops, "link", "set", "lo", "up")
        self._ip("-n", ops, "link", "set", "br0", "up")
        members.update({gw: (self.gw_ns(gw), addr) for gw, addr in GATEWAYS.items()})
        for index, (host, (ns, address)) in enumerate(members.items()):
            port = f"m{index}-{host}"[:15]
            self._ip("-n", ops, "link", "add", port, "type", "veth", "peer", "mgmt0", "netns", ns)
            self._ip("-n", ops, "link", "set", port, "master", "br0")
            self._ip("-n", ops, "link", "set", port, "up")
            self._ip("-n", ns, "addr", "add", f"{address}/24", "dev", "mgmt0")
            self._ip("-n", ns, "link", "set", "lo", "up")
            self._ip("-n", ns, "link", "set", "mgmt0", "up")

    def _tls(self) -> None:
        tls = self.workdir / "tls"
        tls.mkdir()
        _check(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-days", "2", "-subj", "/CN=edgectl lab controller",
                "-addext", "subjectAltName=" + ",".join(
                    f"IP:{address}" for address in self.controllers.values()
                ),
                "-keyout", str(tls / "controller.key"), "-out", str(self.ca_file),
            ]
        )  # fmt: skip

    def _ssh(self) -> None:
        ssh = self.workdir / "ssh"
        ssh.mkdir(mode=0o700)
        _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519")])
        (ssh / "authorized_keys").write_text((ssh / "id_ed25519.pub").read_text())
        # sshd's privilege-separation directory; Debian's init script makes it.
        if not Path("/run/sshd").is_dir():
            Path("/run/sshd").mkdir(mode=0o755)
            self._made_run_sshd = True
        known = []
        hosts = {host: (self.ns(host), addr) for host, addr in self.controllers.items()}
        hosts.update({gw: (self.gw_ns(gw), addr) for gw, addr in GATEWAYS.items()})
        for host, (ns, address) in hosts.items():
            key = ssh / f"{host}_host_key"
            _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
            known.append(
                f"{address} {Path(f'{key}.pub').read_text().split(' ')[0]} "
                f"{Path(f'{key}.pub').read_text().split(' ')[1]}"
            )
            config = ssh / f"{host}_sshd_config"
            config.write_text(
                f"ListenAddress {address}:22\n"
                f"HostKey {key}\n"
                "PidFile none\n"
                f"AuthorizedKeysFile {ssh / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                # The key files live under a temporary directory, not a home.
                "StrictModes no\n"
                "Subsystem sftp /usr/lib/openssh/sftp-server\n"
                "LogLevel ERROR\n"
            )
            log = (self.workdir / f"sshd-{host}.log").open("ab")
            with log:
                self.sshd[host] = subprocess.Popen(
                    ["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        (ssh / "known_hosts").write_text("\n".join(known) + "\n")
        for host, (_, address) in hosts.items():
            assert wait_until(lambda a=address: self._port_open(a, 22), START_TIMEOUT, 0.05), (
                f"sshd of {host} did not listen:\n"
                + (self.workdir / f"sshd-{host}.log").read_text(errors="replace")
            )

    def _database(self) -> None:
        """PostgreSQL on the db host: TCP on its management address only, a password
        for every TCP client, a role and a database of the controllers' own."""
        pgserver.require_for_tests()
        self.database = self._closing.enter_context(
            pgserver.running(
                host=DATABASE_ADDRESS,
                port=5432,
                tcp_auth="scram-sha-256",
                netns=self.db_ns,
            )
        )
        self.database_password = secrets.token_urlsafe(24)
        self.database.create_role(DATABASE_ROLE, self.database_password)
        self.database.create_database(DATABASE_NAME, owner=DATABASE_ROLE)

    def _vault(self) -> None:
        """The DSN, password included, as an operator keeps it: an ansible-vault
        encrypted vars file, its plain text never written to disk."""
        _private_file(self.vault_password_file, secrets.token_urlsafe(32) + "\n")
        dsn = (
            f"postgresql+psycopg://{DATABASE_ROLE}:{self.database_password}"
            f"@{DATABASE_ADDRESS}:5432/{DATABASE_NAME}"
        )
        self.vault_file.parent.mkdir(parents=True)
        done = subprocess.run(
            [
                str(venv_tool("ansible-vault")), "encrypt",
                "--vault-password-file", str(self.vault_password_file),
                "--output", str(self.vault_file), "-",
            ],
            input=json.dumps({"vault_edgectl_controller_database_url": dsn}),
            env=self.ansible_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert self.database_password not in self.vault_file.read_text()

    def _port_open(self, address: str, port: int) -> bool:
        import socket

        with netns.in_netns(self.ops_ns):
            sock = socket.socket()
        with sock:
            sock.settimeout(1)
            try:
                sock.connect((address, port))
            except OSError:
                return False
            return True

    # --- inventory -----------------------------------------------------------

    @property
    def inventory(self) -> Path:
        return self.workdir / "inventory.json"

    def wheelhouse(self) -> Path:
        return self.workdir / "wheelhouse"

    def wheel_archive(self) -> Path:
        return self.wheelhouse() / f"edgectl-{__version__}-wheels.tar"

    def write_inventory(self) -> None:
        ssh = self.workdir / "ssh"
        ca = self.ca_file.read_text()
        first_root = self.root(self.first_controller)
        common = {
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_remote_tmp": str(self.workdir / "remote-tmp"),
            "ansible_ssh_private_key_file": str(ssh / "id_ed25519"),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={ssh / 'known_hosts'} -o StrictHostKeyChecking=yes "
                "-o IdentitiesOnly=yes"
            ),
            "edgectl_controller_version": __version__,
            "edgectl_agent_version": __version__,
            "edgectl_controller_wheelhouse": str(self.wheel_archive()),
            "edgectl_agent_wheelhouse": str(self.wheel_archive()),
            "edgectl_controller_manage_service": False,
            "edgectl_agent_manage_service": False,
        }
        controllers = {
            host: {
                "ansible_host": address,
                "edgectl_controller_root": str(self.root(host)),
                "edgectl_controller_user": self.user(host),
                "edgectl_controller_group": self.user(host),
                "edgectl_controller_listen_host": address,
                "edgectl_controller_api_url": controller_url(address),
            }
            for host, address in self.controllers.items()
        }
        controller_vars: dict[str, Any] = {
            "edgectl_controller_port": CONTROLLER_PORT,
            "edgectl_controller_tls_cert": ca,
            "edgectl_controller_tls_key": (self.workdir / "tls" / "controller.key").read_text(),
            "edgectl_controller_ca_cert": ca,
            # SQLite: a fast re-check. PostgreSQL: the deployed default (1 s), so
            # a quick wake-up across controllers is LISTEN/NOTIFY's.
            "edgectl_controller_settings": {} if self.postgresql else {"poll_interval": 0.05},
            "edgectl_controller_rate_limits": [
                {"name": "residential", "new_per_minute": 600, "burst": 100, "shadow": True}
            ],
            "edgectl_controller_relays": [
                {"name": "isp_smtp", "prefixes": ["198.51.100.25/32"]},
            ],
            "edgectl_controller_pools": [
                {
                    "name": "dyn4",
                    "kind": "dynamic",
                    "prefixes": ["100.64.0.0/16"],
                    "rate_limit": "residential",
                },
                {"name": "static4", "kind": "static", "prefixes": ["100.65.0.0/24"]},
            ],
        }
        if self.postgresql:
            # As inventory/example does: the DSN, password included, from Vault.
            controller_vars["edgectl_controller_database_url"] = (
                "{{ vault_edgectl_controller_database_url }}"
            )
        gateways = {
            gw: {
                "ansible_host": address,
                "edgectl_agent_root": str(self.root(gw)),
                "edgectl_agent_user": self.user(gw),
                "edgectl_agent_group": self.user(gw),
            }
            for gw, address in GATEWAYS.items()
        }
        gateway_vars = {
            "edgectl_agent_controller_url": self.url(self.first_controller),
            "edgectl_agent_ca_cert": ca,
            "edgectl_agent_api_token_file": f"{first_root}/etc/edgectl/bootstrap-netops.token",
            "edgectl_agent_api_ca_path": f"{first_root}/etc/edgectl/tls/ca.pem",
            "edgectl_agent_pools": ["dyn4", "static4"],
            "edgectl_agent_gateway_settings": gateway_settings(),
            "edgectl_agent_settings": {
                "poll_wait": 5,
                "backoff_min": 0.1,
                "backoff_max": 0.5,
                "report_interval": 2,
                "report_min_gap": 0.5,
            },
        }
        if len(self.controllers) > 1:
            gateway_vars["edgectl_agent_controller_urls"] = [self.url(h) for h in self.controllers]
        inventory = {
            "all": {"vars": common},
            "edgectl_controller": {"hosts": controllers, "vars": controller_vars},
            "edgectl_gateways": {"hosts": gateways, "vars": gateway_vars},
        }
        self.inventory.write_text(json.dumps(inventory, indent=2))
        self.inventory.chmod(0o600)

    # --- running Ansible -----------------------------------------------------

    def ansible_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            {
                "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
                "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
                "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
                "ANSIBLE_HOME": str(self.workdir / "ansible-home"),
                "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_STDOUT_CALLBACK": "default",
                "HOME": str(self.workdir),
            }
        )
        return env

    def playbook(self, name: str, *extra: str, in_ops: bool = True) -> str:
        """Run ``ansible/<name>`` (in the ops namespace); its output, or AssertionError."""
        returncode, output = self.playbook_result(name, *extra, in_ops=in_ops)
        assert returncode == 0, f"ansible-playbook {name} failed ({returncode}):\n{output}"
        return output

    def playbook_result(
        self, name: str, *extra: str, in_ops: bool = True, inventory: Path | None = None
    ) -> tuple[int, str]:
        """Run ``ansible/<name>``; its exit code and output."""
        argv = [
            str(venv_tool("ansible-playbook")),
            "-i",
            str(self.inventory if inventory is None else inventory),
            "--forks",
            "1",
            str(ANSIBLE_DIR / name),
            *extra,
        ]
        if self.vault_password_file.exists():
            argv[1:1] = ["--vault-password-file", str(self.vault_password_file)]
        if in_ops:
            argv = ["ip", "netns", "exec", self.ops_ns, *argv]
        done = subprocess.run(
            argv,
            cwd=ANSIBLE_DIR,
            env=self.ansible_env(),
            capture_output=True,
            text=True,
            timeout=PLAYBOOK_TIMEOUT,
            check=False,
        )
        output = done.stdout + done.stderr
        (self.workdir / f"ansible-{name}-{time.monotonic_ns()}.log").write_text(output)
        return done.returncode, output

    # --- services ------------------------------------------------------------

    def unit_path(self, host: str) -> Path:
        name = "edgectl-controller" if host in self.controllers else "edgectl-agent"
        return self.root(host) / "etc/systemd/system" / f"{name}.service"

    def start(self, host: str) -> Service:
        unit = Unit.parse(self.unit_path(host))
        service = Service(host, self.ns(host), unit, self.workdir / f"{host}.log")
        self.services[host] = service
        service.start()
        return service

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        via: str | None = None,
    ) -> Any:
        """A call to a deployed controller (``via``, default the first) from the
        ops namespace, with that host's bootstrap token unless ``token`` is given."""
        via = self.first_controller if via is None else via
        token = self.bootstrap_token(via) if token is None else token
        rest = Rest(self.url(via), netns=self.ops_ns, ssl_context=self.ssl_context())
        return rest.call(method, path, body, token=token)

    def gateway(self, name: str, via: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = self.api("GET", f"/v1/gateways/{name}", via=via)
        return found

    def healthy(self, via: str | None = None) -> bool:
        url = self.url(self.first_controller if via is None else via)
        return Rest(url, netns=self.ops_ns, ssl_context=self.ssl_context()).healthy()

    # --- teardown ------------------------------------------------------------

    def destroy(self) -> None:
        errors: list[str] = []
        for service in reversed(list(self.services.values())):
            service.stop(grace=5.0)
        for proc in self.sshd.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        try:
            # The PostgreSQL server, if any: stopped by pg_ctl before the kill below.
            self._closing.close()
        except (OSError, RuntimeError) as error:
            errors.append(f"database: {error}")
        # Anything else still running in our namespaces (sshd session children).
        namespaces = [*self._namespaces]
        for topo in self.topologies.values():
            namespaces.extend(topo.namespaces() if topo.built else [])
        for ns in namespaces:
            if not netns.exists(ns):
                continue
            pids = _run(["ip", "netns", "pids", ns]).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for topo in self.topologies.values():
            try:
                topo.destroy()
            except OSError as error:
                errors.append(str(error))
        for ns in reversed(self._namespaces):
            try:
                netns.delete(ns)
            except OSError as error:
                errors.append(f"{ns}: {error}")
        (OWNER_DIR / f"{self.mgmt_prefix}.owner").unlink(missing_ok=True)
        for host in self.hosts:
            name = self.user(host)
            if _run(["getent", "passwd", name]).returncode == 0:
                _run(["userdel", name])
            if _run(["getent", "group", name]).returncode == 0:
                _run(["groupdel", name])
        if self._made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise RuntimeError("fleet teardown: " + "; ".join(errors))


# --- a deployment, as the test modules use it ------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(tool: str) -> None:
    """Skip (fail under CI) when ``tool`` is missing."""
    import pytest  # test support: only pytest sessions build a fleet

    found = Path(tool).exists() if tool.startswith("/") else shutil.which(tool) is not None
    if not found:
        message = f"{tool} is missing (see ansible/README.md, 'Tests')"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


TOOLS = (
    str(venv_tool("ansible-playbook")),
    str(venv_tool("ansible-vault")),
    "/usr/sbin/sshd",
    "ssh",
    "ssh-keygen",
    "openssl",
    "setpriv",
    "sudo",
    "nft",
)
SOURCE_IGNORE = (
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "wheelhouse",
)  # fmt: skip
CONVERGE_TIMEOUT = 20.0
MX = "203.0.113.25"  # each gateway's lab has this mail server
SUBMISSION = 587  # never blocked by OP25B, so a refusal here is a quarantine's


def built_fleet(request: Any, **options: Any) -> Fleet:
    """A module's fleet (``Fleet(**options)``), torn down when the module ends."""
    for tool in TOOLS:
        require(tool)
    fleet = Fleet(**options)
    request.addfinalizer(fleet.destroy)
    fleet.build()
    return fleet


@contextlib.contextmanager
def mail_listeners(fleet: Fleet) -> Iterator[None]:
    """The submission port of every lab's mail server accepts while this lasts."""
    with contextlib.ExitStack() as stack:
        for topo in fleet.topologies.values():
            mx = topo.hosts["mx"]
            stack.enter_context(Listener(mx.ns, [MX], [SUBMISSION], hold=False))
        yield


@dataclass
class Deployed:
    """A fleet after wheelhouse.yml, controller.yml and two runs of site.yml."""

    fleet: Fleet
    controller: str  # controller.yml's output
    first: str  # site.yml's outputs
    second: str
    seconds: float

    @property
    def outputs(self) -> tuple[str, str, str]:
        return (self.controller, self.first, self.second)


def deploy(fleet: Fleet) -> Deployed:
    """Wheelhouse, controllers, site, agents started; a second site.yml.

    There is no systemd as PID 1 here, so this plays its part: between
    controller.yml and site.yml it starts every controller from its unit (the
    catalogue and the registrations need the API), after site.yml the agents.
    """
    started = time.monotonic()
    # The package index is reached from the root namespace, like an operator's
    # workstation would; the hosts install from the wheelhouse only.
    # From a copy of the source: pip builds in-tree, and a stale build/ of the
    # work tree could put removed modules into the wheel.
    source = fleet.workdir / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*SOURCE_IGNORE))
    fleet.playbook(
        "wheelhouse.yml",
        "-e",
        f"edgectl_wheelhouse={fleet.wheelhouse()} edgectl_source={source} "
        f"edgectl_version={__version__}",
        in_ops=False,
    )
    controller = fleet.playbook("controller.yml")
    for host in fleet.controllers:
        service = fleet.start(host)
        assert wait_until(lambda h=host: fleet.healthy(h), START_TIMEOUT, 0.1), service.logs()
    first = fleet.playbook("site.yml")
    for gateway in GATEWAYS:
        fleet.start(gateway)

    def converged() -> bool:
        return all(fleet.gateway(g).get("converged") is True for g in GATEWAYS)

    assert wait_until(converged, CONVERGE_TIMEOUT, 0.2), "\n".join(
        fleet.services[g].logs() for g in GATEWAYS
    )
    second = fleet.playbook("site.yml")
    return Deployed(fleet, controller, first, second, time.monotonic() - started)


def check_unit(unit: Path) -> None:
    """``systemd-analyze verify`` finds nothing wrong with ``unit``."""
    require("systemd-analyze")
    done = _run(["systemd-analyze", "verify", str(unit)])
    # verify also reports problems of unrelated units on this machine; only
    # lines that name ours count.
    ours = [line for line in done.stderr.splitlines() if unit.name in line]
    assert done.returncode == 0 and not ours, done.stderr
