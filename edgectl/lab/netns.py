"""Network namespaces, veth pairs, addresses, routes and sysctls through pyroute2.

pyroute2 enters the project here and nowhere else.  Two choices matter:

* Entering a namespace is per *thread*: ``setns(2)`` with CLONE_NEWNET
  switches only the calling thread, so ``in_netns`` opens
  ``/proc/thread-self/ns/net`` (not ``/proc/self``, which is the main
  thread's) to come back.  pyroute2's own ``pushns``/``popns`` keep their
  saved descriptors in one module-global list, which two threads would
  interleave, so only its ``setns`` primitive is used.
* RTNL handles are opened *inside* the namespace (``IPRoute()`` under
  ``in_netns``) instead of ``IPRoute(netns=...)``, which forks a helper
  process per handle; forking a process that runs listener threads is
  asking for trouble and costs a few milliseconds each time.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as _pyroute2_netns

# iproute2 and pyroute2 both keep named namespaces as bind mounts here
# (/var/run is a symlink to /run on Debian).
NETNS_DIR = Path("/run/netns")

# <linux/if_addr.h>: skip duplicate address detection so an IPv6 address is
# usable the moment it is added instead of ~1 s later.
IFA_F_NODAD = 0x02

# Kernel interface names are at most IFNAMSIZ - 1 characters.
IFNAMSIZ = 16

_P = ParamSpec("_P")
_T = TypeVar("_T")


class NetnsError(RuntimeError):
    """A namespace operation failed in a way the caller cannot fix by retrying."""


def ns_path(name: str) -> Path:
    """The bind-mount file of the named namespace."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad namespace name {name!r}")
    return NETNS_DIR / name


def list_namespaces() -> list[str]:
    """Names of all named namespaces (what ``ip netns list`` shows), sorted."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def exists(name: str) -> bool:
    return ns_path(name).exists()


def create(name: str) -> None:
    """Create a named namespace; an existing one with that name is an error.

    pyroute2 does the unshare in a short-lived child process, so the
    calling thread never leaves its own namespace.
    """
    if exists(name):
        raise FileExistsError(errno.EEXIST, "namespace exists", name)
    _pyroute2_netns.create(name)


def delete(name: str) -> bool:
    """Remove a named namespace; return False if it did not exist.

    Unmounting drops the name at once; the kernel frees the namespace (and
    the veth ends in it) when the last socket or process in it goes away.
    """
    path = ns_path(name)
    if not path.exists():
        return False
    # pyroute2's remove ignores the umount2 result and then unlinks, which
    # fails with EBUSY if the unmount did not happen: surface that.
    _pyroute2_netns.remove(name)
    return True


def _current_ns_fd() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def current_ns_id() -> tuple[int, int]:
    """(device, inode) of the calling thread's namespace, to compare namespaces."""
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


def _setns(fd: int) -> None:
    # flags=0: never let pyroute2 create a namespace as a side effect.
    _pyroute2_netns.setns(fd, flags=0)


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with the current thread inside namespace ``name``.

    Sockets created in the body stay in that namespace for their lifetime,
    wherever they are used later.  The original namespace is restored on
    exit, including on error; failing to restore it is fatal for the thread
    (it would silently act in a lab namespace), so that raises NetnsError.
    """
    original = _current_ns_fd()
    try:
        target = os.open(ns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                _setns(original)
            except OSError as exc:
                raise NetnsError(f"could not return from namespace {name!r}: {exc}") from exc
    finally:
        os.close(original)


def run_in(name: str, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``fn(*args, **kwargs)`` inside namespace ``name`` in the current thread."""
    with in_netns(name):
        return fn(*args, **kwargs)


def _sysctl_path(key: str) -> Path:
    # Only net.* sysctls are per namespace; anything else would change the
    # whole machine, so refuse it.
    parts = key.split(".")
    if parts[0] != "net" or len(parts) < 3 or any(not p or p in ("..", ".") for p in parts):
        raise ValueError(f"not a per-namespace sysctl: {key!r}")
    return Path("/proc/sys", *parts)


def set_sysctl(name: str, key: str, value: str | int) -> None:
    """Set a ``net.*`` sysctl inside namespace ``name``.

    /proc/sys/net resolves against the namespace of the *opening* thread, so
    the file is opened inside the namespace.
    """
    path = _sysctl_path(key)
    with in_netns(name):
        path.write_text(f"{value}\n")


def get_sysctl(name: str, key: str) -> str:
    path = _sysctl_path(key)
    with in_netns(name):
        return path.read_text().strip()


def _split_cidr(cidr: str) -> tuple[str, int, int]:
    """``addr/len`` -> (compressed address, prefix length, IP version)."""
    iface = ipaddress.ip_interface(cidr)
    return str(iface.ip), iface.network.prefixlen, iface.version


class NsLink:
    """An RTNL handle bound to one namespace: links, addresses, routes.

    Open it with ``rtnl(name)``; every call acts inside that namespace only.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        with in_netns(name):
            # groups=0: no multicast subscriptions, so no event backlog piles up.
            self._ipr: Any = IPRoute(groups=0)

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> NsLink:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def index(self, ifname: str) -> int:
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise NetnsError(f"no interface {ifname!r} in namespace {self.name!r}")
        return int(found[0])

    def add_veth(self, ifname: str, peer_ns: str, peer_ifname: str) -> None:
        """Create a veth pair: ``ifname`` here, ``peer_ifname`` created directly in ``peer_ns``.

        Creating the peer in its namespace (rather than moving it later)
        means it never exists in the root namespace, even for a moment.
        """
        for n in (ifname, peer_ifname):
            if not 0 < len(n) < IFNAMSIZ:
                raise ValueError(f"interface name {n!r} longer than {IFNAMSIZ - 1}")
        self._ipr.link(
            "add",
            ifname=ifname,
            kind="veth",
            peer={"ifname": peer_ifname, "net_ns_fd": str(ns_path(peer_ns))},
        )

    def set_up(self, ifname: str) -> None:
        self._ipr.link("set", index=self.index(ifname), state="up")

    def is_up(self, ifname: str) -> bool:
        """True once the link is administratively up and has carrier (both veth ends up)."""
        (msg,) = self._ipr.link("get", index=self.index(ifname))
        return bool(msg.get("operstate") == "UP")

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add ``addr/len``; IPv6 addresses get NODAD so they are usable at once."""
        address, prefixlen, version = _split_cidr(cidr)
        extra: dict[str, int] = {"flags": IFA_F_NODAD} if version == 6 else {}
        self._ipr.addr(
            "add", index=self.index(ifname), address=address, prefixlen=prefixlen, **extra
        )

    def addresses(self, ifname: str | None = None) -> list[str]:
        """``addr/len`` of every address (of one interface), IPv4 and IPv6."""
        spec: dict[str, int] = {} if ifname is None else {"index": self.index(ifname)}
        return [f"{m.get('address')}/{m['prefixlen']}" for m in self._ipr.addr("dump", **spec)]

    def add_route(self, dst: str, via: str) -> None:
        """Route ``dst`` (a prefix, or ``default``) via the next hop ``via``.

        ``default`` takes its family from ``via``.
        """
        gateway = ipaddress.ip_address(via)
        if dst == "default":
            dst = "0.0.0.0/0" if gateway.version == 4 else "::/0"
        network = ipaddress.ip_network(dst)
        if network.version != gateway.version:
            raise ValueError(f"route {dst} via {via}: address families differ")
        self._ipr.route(
            "add",
            dst=str(network.network_address),
            dst_len=network.prefixlen,
            gateway=str(gateway),
            family=2 if network.version == 4 else 10,
        )

    def routes(self) -> list[tuple[str, str | None]]:
        """(dst/len, gateway) of the main table, both families; for checks and debugging."""
        result: list[tuple[str, str | None]] = []
        for m in self._ipr.route("dump"):
            if m.get("table") != 254:  # main table only, not local/broadcast
                continue
            dst = m.get("dst") or ("0.0.0.0" if m["family"] == 2 else "::")
            result.append((f"{dst}/{m['dst_len']}", m.get("gateway")))
        return result


def rtnl(name: str) -> NsLink:
    """An RTNL handle inside namespace ``name``; use it as a context manager."""
    return NsLink(name)
