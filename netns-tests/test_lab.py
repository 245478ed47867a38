"""The lab itself, with real traffic and no nftables rules: the baseline every
firewall test compares against."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl.lab import netns, topology
from edgectl.lab.probe import Listener, Outcome, connect, connection_rate, udp_query
from edgectl.lab.topology import Host, Topology, remove_leftovers, standard_topology
from edgectl.testing.wait import wait_until

MAIL_PORTS = (25, 587, 465)
SUBSCRIBERS = ("dyn4", "dyn6", "static4")
MAIL_SERVERS = ("mx", "relay")
NO_LISTENER_PORT = 2525


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def _pairs(src: Host, dst: Host) -> list[tuple[str, str]]:
    """Every (source, destination) address pair of one family between two hosts."""
    return [(s, d) for s in src.addresses for d in dst.addresses if _family(s) == _family(d)]


def _ip_netns_list() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True
    ).stdout


def _left_behind(prefix: str) -> list[str]:
    """Namespaces under ``prefix`` per /run/netns and per ``ip netns list``."""
    listed = [line.split()[0] for line in _ip_netns_list().splitlines() if line.strip()]
    names = set(listed) | set(netns.list_namespaces())
    return sorted(n for n in names if n.startswith(f"{prefix}-"))


@pytest.fixture
def mail_listeners(topology: Topology) -> Iterator[dict[str, Listener]]:
    listeners: dict[str, Listener] = {}
    try:
        for name in MAIL_SERVERS:
            host = topology.hosts[name]
            listeners[name] = Listener(host.ns, host.addresses, MAIL_PORTS)
        yield listeners
    finally:
        for listener in listeners.values():
            listener.close()


@pytest.mark.parametrize("server", MAIL_SERVERS)
@pytest.mark.parametrize("subscriber", SUBSCRIBERS)
def test_subscribers_reach_mail_servers(
    topology: Topology, mail_listeners: dict[str, Listener], subscriber: str, server: str
) -> None:
    src_host, dst_host = topology.hosts[subscriber], topology.hosts[server]
    pairs = _pairs(src_host, dst_host)
    assert pairs, "the standard topology gives every subscriber a path to every server"
    for src, dst in pairs:
        for port in MAIL_PORTS:
            assert connect(src_host.ns, dst, port, src=src) is Outcome.CONNECTED, (src, dst, port)
    listener = mail_listeners[server]
    expected = {src: len(MAIL_PORTS) * sum(1 for s, _ in pairs if s == src) for src, _ in pairs}
    assert wait_until(lambda: listener.by_source() == expected), listener.by_source()


@pytest.mark.parametrize("family", [4, 6])
def test_port_without_listener_is_reset(
    topology: Topology, mail_listeners: dict[str, Listener], family: int
) -> None:
    src = topology.hosts["static4"]  # the one subscriber host with both families
    mx = topology.hosts["mx"]
    dst = mx.ipv4 if family == 4 else mx.ipv6
    assert connect(src.ns, dst, NO_LISTENER_PORT) is Outcome.RESET


def test_dyn6_reaches_mx_from_every_address(
    topology: Topology, mail_listeners: dict[str, Listener]
) -> None:
    dyn6, mx = topology.hosts["dyn6"], topology.hosts["mx"]
    # Two addresses in one delegated /56 and one in another /56.
    assert len(dyn6.ipv6_all) >= 3
    for src in dyn6.ipv6_all:
        assert connect(dyn6.ns, mx.ipv6, 25, src=src) is Outcome.CONNECTED, src
    listener = mail_listeners["mx"]
    assert wait_until(lambda: listener.by_source() == dict.fromkeys(dyn6.ipv6_all, 1))


def test_listener_counts_and_holds_connections_per_source(topology: Topology) -> None:
    dyn4, mx = topology.hosts["dyn4"], topology.hosts["mx"]
    first, second = dyn4.ipv4_all[0], dyn4.ipv4_all[1]
    clients: list[socket.socket] = []
    with Listener(mx.ns, [mx.ipv4], [25]) as listener:
        try:
            for src, n in ((first, 3), (second, 2)):
                for _ in range(n):
                    outcome, sock = connect(dyn4.ns, mx.ipv4, 25, src=src, keep_open=True)
                    assert outcome is Outcome.CONNECTED and sock is not None
                    clients.append(sock)
            assert wait_until(lambda: listener.open_connections(first) == 3)
            assert wait_until(lambda: listener.open_connections(second) == 2)
            assert listener.by_source() == {first: 3, second: 2}

            # A client hanging up frees its slot.
            clients.pop().close()
            assert wait_until(lambda: listener.open_connections(second) == 1)

            # release() closes the server side: every client reads EOF.
            listener.release()
            assert listener.open_connections() == 0
            for sock in clients:
                sock.settimeout(2.0)
                assert sock.recv(1) == b""
            # What was accepted stays counted.
            assert listener.accepted(first) == 3 and listener.accepted(second) == 2
        finally:
            for sock in clients:
                sock.close()


def test_udp_echo_answers(topology: Topology) -> None:
    resolver, dyn4, dyn6 = (topology.hosts[n] for n in ("resolver", "dyn4", "dyn6"))
    with Listener(resolver.ns, resolver.addresses, [53], udp_ports=[53]) as listener:
        assert udp_query(dyn4.ns, resolver.ipv4, 53, src=dyn4.ipv4) is Outcome.ANSWERED
        assert udp_query(dyn6.ns, resolver.ipv6, 53) is Outcome.ANSWERED
        assert listener.answered(dyn4.ipv4) == 1
        assert listener.answered() == 2
        # TCP 53 is served too (DNS over TCP is part of the walled garden).
        assert connect(dyn4.ns, resolver.ipv4, 53) is Outcome.CONNECTED
        # No listener: the resolver host answers ICMP port unreachable.
        assert udp_query(dyn4.ns, resolver.ipv4, 54) is Outcome.UNREACHABLE


def test_connection_rate_is_bounded_by_count_and_time(topology: Topology) -> None:
    dyn4, mx = topology.hosts["dyn4"], topology.hosts["mx"]
    with Listener(mx.ns, [mx.ipv4], [25], hold=False) as listener:
        rate = connection_rate(dyn4.ns, mx.ipv4, 25, 5.0, 200, src=dyn4.ipv4)
        assert rate > 0
        assert wait_until(lambda: listener.accepted(dyn4.ipv4) == 200)
        # Bounded by time: a huge count still stops after ~0.2 s.
        rate = connection_rate(dyn4.ns, mx.ipv4, 25, 0.2, 10_000_000, src=dyn4.ipv4)
        assert 0 < rate * 0.2 < 10_000_000
        assert listener.open_connections() == 0


def test_gateway_forwards_and_hosts_route_via_it(topology: Topology) -> None:
    assert netns.get_sysctl(topology.gateway_ns, "net.ipv4.ip_forward") == "1"
    assert netns.get_sysctl(topology.gateway_ns, "net.ipv6.conf.all.forwarding") == "1"
    static4 = topology.hosts["static4"]
    with netns.rtnl(static4.ns) as link:
        routes = link.routes()
    assert ("0.0.0.0/0", static4.gateway4) in routes
    assert ("::/0", static4.gateway6) in routes
    # Nothing of the lab leaks into the root namespace (this thread is in it).
    root_ifnames = {name for _, name in socket.if_nameindex()}
    assert not root_ifnames & {h.gw_ifname for h in topology.hosts.values()}


def test_in_netns_restores_the_namespace_even_on_error(topology: Topology) -> None:
    before = netns.current_ns_id()
    with pytest.raises(KeyError), netns.in_netns(topology.gateway_ns):
        assert netns.current_ns_id() != before
        raise KeyError("boom")
    assert netns.current_ns_id() == before


def test_destroy_leaves_no_namespace(fresh_prefix: str) -> None:
    topo = standard_topology(fresh_prefix).build()
    assert sorted(_left_behind(fresh_prefix)) == sorted(topo.namespaces())
    topo.destroy()
    assert _left_behind(fresh_prefix) == []
    assert not topo.owner_file.exists()
    topo.destroy()  # idempotent


def test_half_built_topology_is_cleaned_up(
    fresh_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_add_address = netns.NsLink.add_address

    def failing_add_address(self: netns.NsLink, ifname: str, cidr: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 15:  # gateway (12 addresses) done, dyn4 holds 2 of its 3
            raise OSError("injected failure")
        real_add_address(self, ifname, cidr)

    monkeypatch.setattr(netns.NsLink, "add_address", failing_add_address)
    topo = standard_topology(fresh_prefix)
    with pytest.raises(OSError, match="injected failure"), topo:
        pytest.fail("the body must not run when build() fails")
    assert calls == 15
    assert _left_behind(fresh_prefix) == []
    assert not topo.owner_file.exists()
    assert not topo.built


def test_remove_leftovers_spares_live_runs(fresh_prefix: str) -> None:
    base = fresh_prefix  # a base of its own, so other runs' namespaces are out of reach
    live = standard_topology(topology.new_prefix(base)).build()
    try:
        # An "aborted run": a namespace whose owner file names a dead process.
        dead = subprocess.Popen(["true"])
        dead.wait()
        aborted = topology.new_prefix(base)
        netns.create(f"{aborted}-gw")
        Path(topology.OWNER_DIR, f"{aborted}.owner").write_text(f"{dead.pid}\n")

        assert remove_leftovers(base) == [f"{aborted}-gw"]
        assert not Path(topology.OWNER_DIR, f"{aborted}.owner").exists()
        assert sorted(_left_behind(base)) == sorted(live.namespaces())
    finally:
        live.destroy()
    assert _left_behind(base) == []
