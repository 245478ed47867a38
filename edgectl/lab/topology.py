"""Declarative lab topologies: one forwarding gateway namespace and hosts around it.

Each host is its own namespace joined to the gateway by its own veth pair
(``eth0`` on the host, ``in-<host>``/``out-<host>`` on the gateway, so
rules and tcpdump can tell the sides apart).  Every host address sits
on-link with the gateway's address on that veth, so no routes are needed on
the gateway and hosts simply route ``default`` via it.

Namespace names are ``<prefix>-<host>`` and ``<prefix>-gw`` with
``prefix = <base>-<6 hex>`` from ``new_prefix``, so parallel or aborted
runs never collide.  A build writes ``/run/edgectl-lab/<prefix>.owner``
(its PID) *before* creating any namespace; ``remove_leftovers`` uses it to
clear namespaces of dead runs without touching a run that is still alive.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

from edgectl.lab import netns

Side = Literal["inside", "outside"]

OWNER_DIR = Path("/run/edgectl-lab")
HOST_IFNAME = "eth0"
GATEWAY = "gw"
_SIDE_TAG: dict[Side, str] = {"inside": "in-", "outside": "out-"}
# "out-" + name must fit IFNAMSIZ - 1 = 15 characters.
_MAX_HOST_NAME = netns.IFNAMSIZ - 1 - len("out-")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_READY_TIMEOUT = 5.0


def new_prefix(base: str = "ectl") -> str:
    """A fresh per-instance prefix ``<base>-<6 hex>``."""
    if not _PREFIX_RE.match(base):
        raise ValueError(f"bad prefix base {base!r}")
    return f"{base}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class HostSpec:
    """One host in a description: where it sits and the ``addr/len`` on each end of its veth.

    ``gateway`` holds the gateway's end, at most one per IP version; every
    host address must be on-link with the gateway address of its version.
    """

    name: str
    side: Side
    addresses: tuple[str, ...]
    gateway: tuple[str, ...]

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or len(self.name) > _MAX_HOST_NAME:
            raise ValueError(f"host name {self.name!r}: [a-z0-9], at most {_MAX_HOST_NAME}")
        if self.name == GATEWAY:
            raise ValueError(f"host name {GATEWAY!r} is the gateway's")
        if self.side not in _SIDE_TAG:
            raise ValueError(f"host {self.name}: side must be inside or outside")
        gateways = [ipaddress.ip_interface(g) for g in self.gateway]
        by_version = {g.version: g for g in gateways}
        if len(by_version) != len(gateways):
            raise ValueError(f"host {self.name}: one gateway address per IP version")
        if not self.addresses:
            raise ValueError(f"host {self.name}: no addresses")
        for text in self.addresses:
            addr = ipaddress.ip_interface(text)
            gw = by_version.get(addr.version)
            if gw is None or addr.ip not in gw.network or addr.network != gw.network:
                raise ValueError(f"host {self.name}: {text} is not on-link with a gateway address")

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, object]) -> HostSpec:
        """From plain data, e.g. a TOML table: ``{side, addresses: [...], gateway: [...]}``."""
        side = data.get("side")
        if side not in ("inside", "outside"):
            raise ValueError(f"host {name}: side must be inside or outside")
        return cls(
            name=name,
            side=side,
            addresses=_strings(data.get("addresses"), f"{name}.addresses"),
            gateway=_strings(data.get("gateway"), f"{name}.gateway"),
        )


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of strings")
    return tuple(value)


def _ips(cidrs: Iterable[str], version: int) -> tuple[str, ...]:
    out = (ipaddress.ip_interface(c) for c in cidrs)
    return tuple(str(i.ip) for i in out if i.version == version)


@dataclass(frozen=True)
class Host:
    """A host of a (possibly not yet built) topology, with the names tests need."""

    spec: HostSpec
    ns: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def side(self) -> Side:
        return self.spec.side

    @property
    def ifname(self) -> str:
        return HOST_IFNAME

    @property
    def gw_ifname(self) -> str:
        """The gateway's end of this host's veth (``in-dyn4``, ``out-mx``)."""
        return _SIDE_TAG[self.spec.side] + self.spec.name

    @property
    def ipv4_all(self) -> tuple[str, ...]:
        return _ips(self.spec.addresses, 4)

    @property
    def ipv6_all(self) -> tuple[str, ...]:
        return _ips(self.spec.addresses, 6)

    @property
    def ipv4(self) -> str:
        """The first IPv4 address; LookupError if the host has none."""
        return _first(self.ipv4_all, self.name, "IPv4")

    @property
    def ipv6(self) -> str:
        return _first(self.ipv6_all, self.name, "IPv6")

    @property
    def gateway4(self) -> str:
        """The gateway's IPv4 address on this host's link (the host's next hop)."""
        return _first(_ips(self.spec.gateway, 4), self.name, "IPv4 gateway")

    @property
    def gateway6(self) -> str:
        return _first(_ips(self.spec.gateway, 6), self.name, "IPv6 gateway")

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address, IPv4 first."""
        return self.ipv4_all + self.ipv6_all


def _first(values: tuple[str, ...], host: str, what: str) -> str:
    if not values:
        raise LookupError(f"host {host} has no {what} address")
    return values[0]


@dataclass
class Topology:
    """A gateway namespace plus hosts; ``build()`` makes it real, ``destroy()`` removes it.

    Usable as a context manager.  A failed ``build()`` destroys whatever it
    created before re-raising; ``destroy()`` is idempotent.
    """

    prefix: str
    specs: Sequence[HostSpec]
    # Address pools the hosts stand for (name -> prefix), for tests that
    # configure policy from the topology instead of repeating literals.
    pools: Mapping[str, str] = field(default_factory=dict)
    hosts: dict[str, Host] = field(init=False)
    _created: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"bad topology prefix {self.prefix!r}")
        self.hosts = {}
        for spec in self.specs:
            if spec.name in self.hosts:
                raise ValueError(f"duplicate host {spec.name}")
            self.hosts[spec.name] = Host(spec, f"{self.prefix}-{spec.name}")

    @classmethod
    def from_description(
        cls,
        prefix: str,
        hosts: Mapping[str, Mapping[str, object]],
        pools: Mapping[str, str] | None = None,
    ) -> Topology:
        """From plain data: ``{"mx": {"side": "outside", "addresses": [...], ...}, ...}``."""
        specs = [HostSpec.from_mapping(name, data) for name, data in hosts.items()]
        return cls(prefix, specs, dict(pools or {}))

    @property
    def gateway_ns(self) -> str:
        return f"{self.prefix}-{GATEWAY}"

    def namespaces(self) -> list[str]:
        """Every namespace this topology consists of, gateway first."""
        return [self.gateway_ns, *(h.ns for h in self.hosts.values())]

    @property
    def built(self) -> bool:
        return bool(self._created)

    @property
    def owner_file(self) -> Path:
        return OWNER_DIR / f"{self.prefix}.owner"

    def build(self) -> Self:
        if self._created:
            raise RuntimeError(f"topology {self.prefix} is already built")
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        # Owner first: a concurrent remove_leftovers must see this run as alive
        # before any of its namespaces exists.
        OWNER_DIR.mkdir(mode=0o755, exist_ok=True)
        self.owner_file.write_text(f"{os.getpid()}\n")
        for name in self.namespaces():
            if netns.exists(name):
                raise FileExistsError(f"namespace {name} exists; not ours to reuse")
            # Recorded before create: a create that fails half-way may leave
            # the mount point behind, and it is ours to remove.
            self._created.append(name)
            netns.create(name)
        for name in self.namespaces():
            # New IPv6 interfaces copy conf/default; without DAD addresses and
            # link-locals are usable immediately instead of ~1 s later.
            netns.set_sysctl(name, "net.ipv6.conf.default.accept_dad", 0)
            netns.set_sysctl(name, "net.ipv6.conf.all.accept_dad", 0)
        netns.set_sysctl(self.gateway_ns, "net.ipv4.ip_forward", 1)
        netns.set_sysctl(self.gateway_ns, "net.ipv6.conf.all.forwarding", 1)
        with netns.rtnl(self.gateway_ns) as gw:
            gw.set_up("lo")
            for host in self.hosts.values():
                gw.add_veth(host.gw_ifname, host.ns, HOST_IFNAME)
                for cidr in host.spec.gateway:
                    gw.add_address(host.gw_ifname, cidr)
                gw.set_up(host.gw_ifname)
        for host in self.hosts.values():
            with netns.rtnl(host.ns) as link:
                link.set_up("lo")
                for cidr in host.spec.addresses:
                    link.add_address(HOST_IFNAME, cidr)
                link.set_up(HOST_IFNAME)
                for cidr in host.spec.gateway:
                    link.add_route("default", str(ipaddress.ip_interface(cidr).ip))
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Poll until every veth end reports carrier (both ends up)."""
        deadline = time.monotonic() + _READY_TIMEOUT
        pending = {(self.gateway_ns, h.gw_ifname) for h in self.hosts.values()}
        pending |= {(h.ns, HOST_IFNAME) for h in self.hosts.values()}
        while pending:
            for ns_name, ifname in sorted(pending):
                with netns.rtnl(ns_name) as link:
                    if link.is_up(ifname):
                        pending.discard((ns_name, ifname))
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"links not up after {_READY_TIMEOUT}s: {sorted(pending)}")
            if pending:
                time.sleep(0.01)

    def destroy(self) -> None:
        """Remove every namespace this instance created, then its owner file."""
        errors: list[str] = []
        for name in reversed(self._created):
            try:
                netns.delete(name)
            except OSError as exc:
                errors.append(f"{name}: {exc}")
        self._created.clear()
        self.owner_file.unlink(missing_ok=True)
        if errors:
            raise netns.NetnsError("could not remove namespaces: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self.build()

    def __exit__(self, *_: object) -> None:
        self.destroy()


def _owner_alive(owner_file: Path) -> bool:
    try:
        pid = int(owner_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True


def remove_leftovers(base: str, *, force: bool = False) -> list[str]:
    """Remove namespaces named ``<base>-<6 hex>-*`` whose owning process is gone.

    With ``force`` also those of live owners (``lab down`` for a topology a
    CLI left up).  Returns the removed namespace names.
    """
    if not _PREFIX_RE.match(base):
        raise ValueError(f"bad prefix base {base!r}")
    pattern = re.compile(rf"^({re.escape(base)}-[0-9a-f]{{6}})-[a-z][a-z0-9]*$")
    by_prefix: dict[str, list[str]] = {}
    for name in netns.list_namespaces():
        m = pattern.match(name)
        if m:
            by_prefix.setdefault(m.group(1), []).append(name)
    owner_re = re.compile(rf"^({re.escape(base)}-[0-9a-f]{{6}})\.owner$")
    if OWNER_DIR.is_dir():
        for entry in OWNER_DIR.iterdir():
            m = owner_re.match(entry.name)
            if m:
                by_prefix.setdefault(m.group(1), [])
    removed: list[str] = []
    for prefix, names in sorted(by_prefix.items()):
        owner = OWNER_DIR / f"{prefix}.owner"
        if not force and _owner_alive(owner):
            continue
        for name in names:
            if netns.delete(name):
                removed.append(name)
        owner.unlink(missing_ok=True)
    return removed


# The standard test topology.  Pools come only from 100.64.0.0/10 (shared
# address space) and 2001:db8::/32; servers only from the documentation
# ranges.  ISP infrastructure is 198.51.100.0/24 and 2001:db8:eeee::/48; the
# relay, resolver and portal are separate hosts (each on its own /27) so a
# walled-garden test can see the relay blocked while the resolver answers.
STANDARD_POOLS: dict[str, str] = {
    "dyn4": "100.64.0.0/16",
    "dyn6": "2001:db8:1000::/40",  # delegates /56 per subscriber
    "static4": "100.65.0.0/24",
    "static6": "2001:db8:2000::/40",
}
STANDARD_DYN6_DELEGATED_LENGTH = 56
STANDARD_INFRASTRUCTURE: tuple[str, ...] = ("198.51.100.0/24", "2001:db8:eeee::/48")

_STANDARD: tuple[HostSpec, ...] = (
    # Three subscribers of the dynamic IPv4 pool on one host: bind the source.
    HostSpec(
        "dyn4",
        "inside",
        ("100.64.0.10/16", "100.64.0.11/16", "100.64.0.12/16"),
        ("100.64.0.1/16",),
    ),
    # ::10 and ::11 share the /56 2001:db8:1000:100::/56 (one subscriber);
    # 200::10 is another /56 (another subscriber).
    HostSpec(
        "dyn6",
        "inside",
        ("2001:db8:1000:100::10/40", "2001:db8:1000:100::11/40", "2001:db8:1000:200::10/40"),
        ("2001:db8:1000::1/40",),
    ),
    HostSpec(
        "static4",
        "inside",
        ("100.65.0.10/24", "2001:db8:2000:100::10/40"),
        ("100.65.0.1/24", "2001:db8:2000::1/40"),
    ),
    # .26/::26 are a second outside destination on the same server, for
    # per-subscriber->destination limits.
    HostSpec(
        "mx",
        "outside",
        ("203.0.113.25/24", "203.0.113.26/24", "2001:db8:ffff::25/64", "2001:db8:ffff::26/64"),
        ("203.0.113.1/24", "2001:db8:ffff::1/64"),
    ),
    HostSpec(
        "relay",
        "outside",
        ("198.51.100.25/27", "2001:db8:eeee::25/64"),
        ("198.51.100.1/27", "2001:db8:eeee::1/64"),
    ),
    HostSpec(
        "resolver",
        "outside",
        ("198.51.100.53/27", "2001:db8:eeee:53::53/64"),
        ("198.51.100.33/27", "2001:db8:eeee:53::1/64"),
    ),
    HostSpec(
        "portal",
        "outside",
        ("198.51.100.80/27", "2001:db8:eeee:80::80/64"),
        ("198.51.100.65/27", "2001:db8:eeee:80::1/64"),
    ),
)


def standard_topology(prefix: str) -> Topology:
    """The standard test topology (not built): see ``_STANDARD`` for the addresses."""
    return Topology(prefix, _STANDARD, dict(STANDARD_POOLS))
