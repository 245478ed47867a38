"""kernel_readback against a real kernel, inside a throwaway network namespace.

Each test gets its own namespace ``ectl-rb-<hex>`` (``ip netns add``), loads
a small ruleset there with ``ip netns exec NS nft -f``, and opens its
NfNetlink socket from inside it; the namespace is deleted by a finalizer
whatever happens.  The root namespace's ruleset is never read or written.
Small sets only: the 1M-element measurement lives in bench/readback.py.
"""

from __future__ import annotations

import errno
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl.agent import kernel_readback as kr
from edgectl.agent.netlink.constants import (
    NFPROTO_INET,
    NFPROTO_IPV4,
    NFT_SET_ANONYMOUS,
    NFT_SET_EVAL,
    NFT_SET_INTERVAL,
    NFT_SET_TIMEOUT,
)
from edgectl.agent.netlink.nfsocket import NetlinkError, NfNetlink
from edgectl.lab.netns import in_netns
from edgectl.testing.processes import nft
from edgectl.testing.wait import wait_until

POLL_DEADLINE = 15.0  # element timeouts are 1 s; anything near 15 s is a failure

RULESET = """
table inet edgectl {
    counter op25b_drops { }
    counter quarantine_hits { packets 5 bytes 300 }

    set quar4 {
        type ipv4_addr; flags timeout;
        elements = { 100.64.0.1, 100.64.0.2, 100.64.0.3 timeout 1h, 100.64.0.4 }
    }
    set quar6 {
        type ipv6_addr; flags timeout;
        elements = { 2001:db8:1000:100::, 2001:db8:1000:200::, 2001:db8:1000:300:: }
    }
    set pools4 {
        type ipv4_addr; flags interval;
        elements = { 100.64.0.0/10, 192.0.2.0/24 }
    }
    set meter4 {
        type ipv4_addr; size 65536; flags dynamic,timeout; timeout 2m;
    }

    chain forward {
        type filter hook forward priority filter; policy accept;
        ip saddr @quar4 counter name quarantine_hits drop comment "r1"
        ip saddr { 198.51.100.1, 198.51.100.2 } accept comment "r2"
        tcp dport 25 jump mail comment "r3"
        ip saddr @pools4 tcp dport 25 add @meter4 { ip saddr limit rate over 10/minute } drop
    }
    chain mail {
        ip6 saddr @quar6 drop comment "m1"
    }
    chain out {
        type filter hook output priority 10; policy drop;
    }
}

table inet othertool {
    counter foreign_counter { }
    set foreign { type ipv4_addr; elements = { 10.9.9.9 } }
    chain forward {
        type filter hook forward priority -10; policy accept;
        accept comment "other"
    }
    chain edgectl_lookalike { }
}
"""


class Lab:
    """One namespace holding RULESET, and a socket opened inside it."""

    def __init__(self, name: str, sock: NfNetlink) -> None:
        self.name = name
        self.sock = sock

    def nft(self, *args: str) -> None:
        nft(self.name, *args)

    def open_socket(self, rcvbuf: int) -> NfNetlink:
        # setns() is per thread and the socket keeps the namespace it was
        # created in, so only the creation happens inside.
        with in_netns(self.name):
            return NfNetlink(rcvbuf=rcvbuf)


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    name = f"ectl-rb-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    # Registered right after creation, before anything else can fail.
    request.addfinalizer(
        lambda: subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)
    )
    nft(name, script=RULESET)
    with in_netns(name):
        sock = NfNetlink()
    try:
        yield Lab(name, sock)
    finally:
        sock.close()


def v4(*addresses: str) -> list[bytes]:
    return [kr.encode_ipv4(a) for a in addresses]


def v6(*addresses: str) -> list[bytes]:
    return [kr.encode_ipv6(a) for a in addresses]


# --- read_table -----------------------------------------------------------------


def test_chains_rules_and_comments(lab: Lab) -> None:
    layout = kr.read_table(lab.sock, NFPROTO_INET, "edgectl")
    assert layout is not None
    assert list(layout.chains) == ["forward", "mail", "out"]

    forward = layout.chains["forward"]
    assert (forward.hook, forward.priority, forward.policy, forward.type) == (
        "forward",
        0,
        "accept",
        "filter",
    )
    assert [r.comment for r in forward.rules] == ["r1", "r2", "r3", None]
    handles = [r.handle for r in forward.rules]
    assert len(set(handles)) == 4 and all(h > 0 for h in handles)

    out = layout.chains["out"]
    assert (out.hook, out.priority, out.policy, out.rules) == ("output", 10, "drop", [])

    mail = layout.chains["mail"]
    assert (mail.hook, mail.priority, mail.policy, mail.type) == (None, None, None, None)
    assert [r.comment for r in mail.rules] == ["m1"]


def test_sets_without_anonymous_ones(lab: Lab) -> None:
    layout = kr.read_table(lab.sock, NFPROTO_INET, "edgectl")
    assert layout is not None
    # r2's ``{ 198.51.100.1, ... }`` is an anonymous __set%d: not listed.
    assert sorted(layout.sets) == ["meter4", "pools4", "quar4", "quar6"]

    quar4 = layout.sets["quar4"]
    assert (quar4.key_type, quar4.key_len) == (7, 4)  # nft's ipv4_addr datatype
    assert quar4.flags & NFT_SET_TIMEOUT
    assert not quar4.flags & (NFT_SET_INTERVAL | NFT_SET_ANONYMOUS)
    assert (quar4.size, quar4.timeout_ms, quar4.data_type, quar4.data_len) == (
        None,
        None,
        None,
        None,
    )

    quar6 = layout.sets["quar6"]
    assert (quar6.key_type, quar6.key_len) == (8, 16)  # ipv6_addr

    pools4 = layout.sets["pools4"]
    assert pools4.flags & NFT_SET_INTERVAL

    meter4 = layout.sets["meter4"]
    # ``flags dynamic`` is NFT_SET_EVAL in the kernel.
    assert meter4.flags & (NFT_SET_EVAL | NFT_SET_TIMEOUT) == (NFT_SET_EVAL | NFT_SET_TIMEOUT)
    assert (meter4.size, meter4.timeout_ms) == (65536, 120_000)
    assert meter4.userdata  # libnftnl TLVs (key byte order at least)


def test_counters(lab: Lab) -> None:
    layout = kr.read_table(lab.sock, NFPROTO_INET, "edgectl")
    assert layout is not None
    assert layout.counters == {"op25b_drops": (0, 0), "quarantine_hits": (5, 300)}


def test_other_tables_do_not_leak_in(lab: Lab) -> None:
    layout = kr.read_table(lab.sock, NFPROTO_INET, "edgectl")
    assert layout is not None
    assert "edgectl_lookalike" not in layout.chains
    assert "foreign" not in layout.sets
    assert "foreign_counter" not in layout.counters
    assert all(r.comment != "other" for c in layout.chains.values() for r in c.rules)

    other = kr.read_table(lab.sock, NFPROTO_INET, "othertool")
    assert other is not None
    assert list(other.chains) == ["forward", "edgectl_lookalike"]
    assert other.chains["forward"].priority == -10
    assert list(other.sets) == ["foreign"]
    assert list(other.counters) == ["foreign_counter"]


def test_absent_table_is_none(lab: Lab) -> None:
    assert kr.read_table(lab.sock, NFPROTO_INET, "absent") is None
    # Same name, other family: ``table ip edgectl`` does not exist.
    assert kr.read_table(lab.sock, NFPROTO_IPV4, "edgectl") is None
    lab.nft("delete", "table", "inet", "edgectl")
    assert kr.read_table(lab.sock, NFPROTO_INET, "edgectl") is None
    assert kr.read_table(lab.sock, NFPROTO_INET, "othertool") is not None


# --- generation -----------------------------------------------------------------


def test_generation_increments_on_commit(lab: Lab) -> None:
    before = kr.generation(lab.sock)
    layout = kr.read_table(lab.sock, NFPROTO_INET, "edgectl")
    assert layout is not None and layout.generation == before
    # Reads are not commits.
    assert kr.generation(lab.sock) == before

    lab.nft("add", "element", "inet", "edgectl", "quar4", "{ 100.64.0.77 }")
    wait_until(
        lambda: kr.generation(lab.sock) > before,
        POLL_DEADLINE,
        0.05,
        what="generation moves after add element",
    )
    after = kr.generation(lab.sock)
    layout = kr.read_table(lab.sock, NFPROTO_INET, "edgectl")
    assert layout is not None and layout.generation == after


def test_sockets_see_their_own_namespace(lab: Lab, tmp_path: Path) -> None:
    # A second namespace with a different ruleset: each socket reads its own.
    other = f"ectl-rb-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", other], check=True, timeout=30)
    try:
        nft(other, script="table inet edgectl {\n    chain only_here {\n    }\n}\n")
        with in_netns(other), NfNetlink() as sock:
            layout = kr.read_table(sock, NFPROTO_INET, "edgectl")
        # The read above ran inside; this one runs in the test's namespace,
        # through the lab socket opened earlier.
        mine = kr.read_table(lab.sock, NFPROTO_INET, "edgectl")
    finally:
        subprocess.run(["ip", "netns", "delete", other], check=False, timeout=30)
    assert layout is not None and list(layout.chains) == ["only_here"]
    assert mine is not None and "only_here" not in mine.chains


# --- missing_elements -----------------------------------------------------------


def test_missing_ipv4_keys_are_exactly_the_deleted_ones(lab: Lab) -> None:
    keys = v4("100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.0.4", "100.64.0.9")
    assert kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "quar4", keys) == v4("100.64.0.9")
    lab.nft("delete", "element", "inet", "edgectl", "quar4", "{ 100.64.0.2, 100.64.0.4 }")
    assert kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "quar4", keys) == v4(
        "100.64.0.2", "100.64.0.4", "100.64.0.9"
    )


def test_missing_ipv6_keys_are_exactly_the_deleted_ones(lab: Lab) -> None:
    keys = v6("2001:db8:1000:100::", "2001:db8:1000:200::", "2001:db8:1000:300::")
    assert kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "quar6", keys) == []
    lab.nft("delete", "element", "inet", "edgectl", "quar6", "{ 2001:db8:1000:200:: }")
    assert kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "quar6", keys) == v6(
        "2001:db8:1000:200::"
    )


def test_no_keys_asks_nothing(lab: Lab) -> None:
    assert kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "quar4", []) == []


def test_expired_element_counts_as_missing(lab: Lab) -> None:
    lab.nft("add", "element", "inet", "edgectl", "quar4", "{ 100.64.0.50 timeout 1s }")
    key = v4("100.64.0.50")
    assert kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "quar4", key) == []
    wait_until(
        lambda: kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "quar4", key) == key,
        POLL_DEADLINE,
        0.05,
        what="an element past its 1 s timeout reads as missing",
    )


def test_many_keys_through_a_tiny_receive_buffer(lab: Lab) -> None:
    # SO_RCVBUF far smaller than a window of replies: the kernel drops
    # answers (ENOBUFS) and missing_elements must re-ask, not hang or lie.
    sock = lab.open_socket(rcvbuf=4096)
    try:
        present = v4("100.64.0.1", "100.64.0.3")
        absent = [bytes([172, 16, i // 256, i % 256]) for i in range(500)]
        keys = [k for pair in zip(absent[:2], present, strict=True) for k in pair] + absent[2:]
        got = kr.missing_elements(sock, NFPROTO_INET, "edgectl", "quar4", keys, window=256)
    finally:
        sock.close()
    assert got == absent


def test_absent_set_is_an_error_not_all_missing(lab: Lab) -> None:
    with pytest.raises(NetlinkError) as info:
        kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "nope", v4("100.64.0.1"))
    assert info.value.errno == errno.ENOENT
    with pytest.raises(NetlinkError) as info:
        kr.missing_elements(lab.sock, NFPROTO_INET, "absent", "quar4", v4("100.64.0.1"))
    assert info.value.errno == errno.ENOENT


def test_refuses_interval_sets_and_wrong_key_lengths(lab: Lab) -> None:
    with pytest.raises(ValueError, match="interval"):
        kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "pools4", v4("100.64.0.1"))
    with pytest.raises(ValueError, match="bytes"):
        kr.missing_elements(lab.sock, NFPROTO_INET, "edgectl", "quar4", v6("2001:db8::"))
