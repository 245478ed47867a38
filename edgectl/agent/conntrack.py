"""Delete the conntrack entries of subscriber keys over ctnetlink (see ``flow_cut``).

Entries are read with one ctnetlink dump per address family and matched
here (a key is a prefix: an IPv4 /32, an IPv6 /56 or /64 delegation, or a
range), then deleted by their original tuple.  ctnetlink's own dump filter
matches exact addresses only, not masked prefixes.

Standard library only, on the agent's own nfnetlink socket
(``edgectl.agent.netlink.nfsocket.NfNetlink``): one socket speaks every nfnetlink subsystem.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from edgectl.agent.netlink.codec import (
    NlMsg,
    be32,
    decode_error,
    encode_message,
    nft_attrs,
    nla,
    parse_attrs,
)
from edgectl.agent.netlink.constants import (
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NLMSG_OVERRUN,
)
from edgectl.agent.netlink.nfsocket import NetlinkError, NfNetlink
from edgectl.model.prefix import Prefix

# <linux/netfilter/nfnetlink.h>, <linux/netfilter/nfnetlink_conntrack.h>
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_STATS = 5
CTA_STATS_GLOBAL_ENTRIES = 1
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_ID = 12
CTA_ZONE = 18
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4
CTA_PROTO_NUM = 1
CTA_PROTO_DST_PORT = 3

_FAMILY: dict[int, int] = {4: int(socket.AF_INET), 6: int(socket.AF_INET6)}
_SRC = {4: CTA_IP_V4_SRC, 6: CTA_IP_V6_SRC}
_DST = {4: CTA_IP_V4_DST, 6: CTA_IP_V6_DST}
_BITS = {4: 32, 6: 128}
_BE16 = struct.Struct(">H")


@dataclass(frozen=True, slots=True)
class Cut:
    """Subscriber keys whose flows go: all of them (``block``), or mail only (``smtp``)."""

    everything: frozenset[Prefix] = frozenset()
    mail: frozenset[Prefix] = frozenset()
    mail_ports: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.everything or self.mail)

    def matchers(self) -> tuple[Matcher, Matcher]:
        return _Matcher(self.everything), _Matcher(self.mail)


class Matcher(Protocol):
    """Is (IP version, address) held?"""

    def __contains__(self, item: tuple[int, int]) -> bool: ...


class Targets(Protocol):
    """What a cut matches: a ``Cut``, or holds looked up where they already are."""

    @property
    def mail_ports(self) -> frozenset[int]: ...

    def matchers(self) -> tuple[Matcher, Matcher]:
        """(every flow of these, mail flows of these)."""
        ...


@dataclass(frozen=True, slots=True)
class Entry:
    version: int
    src: int
    dst: int
    proto: int
    dport: int | None
    orig: bytes  # the CTA_TUPLE_ORIG payload, sent back as is to delete it
    zone: bytes | None


class _Matcher:
    """Is an address inside one of many prefixes?  One set lookup per distinct length."""

    def __init__(self, keys: Iterable[Prefix]) -> None:
        by_length: dict[tuple[int, int], set[int]] = {}
        for key in keys:
            by_length.setdefault((key.version, key.length), set()).add(key.value)
        self._tables: dict[int, list[tuple[int, set[int]]]] = {4: [], 6: []}
        for (version, length), values in by_length.items():
            self._tables[version].append((~((1 << (_BITS[version] - length)) - 1), values))

    def __contains__(self, item: tuple[int, int]) -> bool:
        version, address = item
        return any(address & mask in values for mask, values in self._tables[version])


def _decode(message: NlMsg, version: int) -> Entry | None:
    attrs = nft_attrs(message)
    orig = attrs.get(CTA_TUPLE_ORIG)
    if orig is None:
        return None
    tuple_attrs = parse_attrs(orig)
    ip = parse_attrs(tuple_attrs.get(CTA_TUPLE_IP, b""))
    proto = parse_attrs(tuple_attrs.get(CTA_TUPLE_PROTO, b""))
    if _SRC[version] not in ip or CTA_PROTO_NUM not in proto:
        return None
    dport = proto.get(CTA_PROTO_DST_PORT)
    return Entry(
        version=version,
        src=int.from_bytes(ip[_SRC[version]], "big"),
        dst=int.from_bytes(ip[_DST[version]], "big"),
        proto=proto[CTA_PROTO_NUM][0],
        dport=None if dport is None else _BE16.unpack(dport[:2])[0],
        orig=orig,
        zone=attrs.get(CTA_ZONE),
    )


# Where the original tuple's addresses sit in a dumped entry: the kernel
# writes CTA_TUPLE_ORIG first, CTA_TUPLE_IP first in it, source then
# destination (ctnetlink_dump_tuples).  Reading them by offset, checked
# against the attribute headers, costs ~1 us an entry against ~40 us for
# the generic attribute walk; an entry laid out otherwise takes that walk.
_ADDR_LEN = {4: 4, 6: 16}
_HEADERS = {
    version: (
        struct.pack("=HH", 4 + size, _SRC[version]),
        struct.pack("=HH", 4 + size, _DST[version]),
    )
    for version, size in _ADDR_LEN.items()
}


def _ends(payload: bytes, version: int) -> tuple[int, int] | None:
    """(source, destination) of the original tuple, or None if not where expected."""
    size = _ADDR_LEN[version]
    src_header, dst_header = _HEADERS[version]
    dst_at = 16 + size
    if payload[12:16] != src_header or payload[dst_at : dst_at + 4] != dst_header:
        return None
    if payload[6] != CTA_TUPLE_ORIG or payload[10] != CTA_TUPLE_IP:
        return None
    return (
        int.from_bytes(payload[16:dst_at], "big"),
        int.from_bytes(payload[dst_at + 4 : dst_at + 4 + size], "big"),
    )


def _dump(sock: NfNetlink, version: int) -> Iterator[NlMsg]:
    """Every conntrack entry of one family (NfNetlink.dump speaks nf_tables only)."""
    seq = sock.next_seq()
    sock.send(
        encode_message(
            IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            _FAMILY[version],
            b"",
            subsys=NFNL_SUBSYS_CTNETLINK,
        )
    )
    while True:
        for message in sock.recv() or ():
            if message.seq != seq:
                continue
            if message.type == NLMSG_DONE:
                return
            if message.type == NLMSG_ERROR:
                code, text = decode_error(message)
                if code in (errno.ENOENT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT):
                    return  # conntrack not loaded in this namespace: no flows to cut
                raise NetlinkError(code, text or "conntrack dump refused")
            if message.type in (NLMSG_NOOP, NLMSG_OVERRUN):
                continue
            yield message


def entries(sock: NfNetlink) -> int | None:
    """How many conntrack entries the socket's namespace has (None: could not tell).

    One small request (~12 us), against a dump's walk of the host's whole
    hash table (10-25 ms even when this namespace has none).
    """
    seq = sock.next_seq()
    request = encode_message(
        IPCTNL_MSG_CT_GET_STATS,
        NLM_F_REQUEST,
        seq,
        socket.AF_UNSPEC,
        b"",
        subsys=NFNL_SUBSYS_CTNETLINK,
    )
    sock.send(request)
    while True:
        for message in sock.recv() or ():
            if message.seq != seq:
                continue
            if message.type == NLMSG_ERROR:
                code, _ = decode_error(message)
                if code in (errno.ENOENT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT):
                    return 0  # conntrack not loaded in this namespace: nothing tracked
                return None
            # nfgenmsg (4 bytes), then CTA_STATS_GLOBAL_* attributes.
            count = parse_attrs(message.payload[4:]).get(CTA_STATS_GLOBAL_ENTRIES)
            return None if count is None else be32(count)


def _candidate(message: NlMsg, version: int, everything: Matcher, mail: Matcher) -> bool:
    """Cheap first look: could this entry be cut?  (Unknown layouts: yes, decode it.)"""
    ends = _ends(message.payload, version)
    if ends is None:
        return True
    src, dst = ends
    return (version, src) in everything or (version, dst) in everything or (version, src) in mail


def _doomed(entry: Entry, everything: Matcher, mail: Matcher, ports: frozenset[int]) -> bool:
    # Either end: a held subscriber's own connections and those made to it.
    ends = ((entry.version, entry.src), (entry.version, entry.dst))
    if any(end in everything for end in ends):
        return True
    is_mail = entry.proto == socket.IPPROTO_TCP and entry.dport in ports
    return is_mail and (entry.version, entry.src) in mail


# A cut, or what computes its targets: after a full sync the cut is every
# held key (a million of them); its matchers are made only once the dump
# has shown an entry to match.
CutSource = Cut | Callable[[], Targets]


def cut_flows(sock: NfNetlink, sources: Sequence[CutSource]) -> int:
    """Delete the conntrack entries any of ``sources`` names; how many went.

    An entry that ends between the dump and its delete answers ENOENT,
    which is what we wanted anyway.
    """
    sources = [s for s in sources if not (isinstance(s, Cut) and not s)]
    if not sources or entries(sock) == 0:
        # Nothing tracked here (a gateway with track_non_mail = false and no
        # mail in flight, a quiet lab): skip the walk of the host's table.
        return 0
    if all(isinstance(s, Cut) for s in sources):
        cuts = [s for s in sources if isinstance(s, Cut)]
        versions = sorted({k.version for c in cuts for k in (*c.everything, *c.mail)})
    else:
        versions = [4, 6]
    built: list[tuple[Matcher, Matcher, frozenset[int]]] = []

    def matchers() -> list[tuple[Matcher, Matcher, frozenset[int]]]:
        if not built:
            for source in sources:
                targets: Targets = source if isinstance(source, Cut) else source()
                built.append((*targets.matchers(), targets.mail_ports))
        return built

    requests = []
    for version in versions:
        # Collected before deleting: deleting while the dump runs would
        # change the table under the kernel's dump cursor.  Every message
        # is read, matched or not, so that none is left on the socket.
        doomed = []
        for message in _dump(sock, version):
            for everything, mail, ports in matchers():
                if (
                    _candidate(message, version, everything, mail)
                    and (entry := _decode(message, version)) is not None
                    and _doomed(entry, everything, mail, ports)
                ):
                    doomed.append(entry)
                    break
        for entry in doomed:
            attrs = nla(CTA_TUPLE_ORIG | NLA_F_NESTED, entry.orig)
            if entry.zone is not None:
                attrs += nla(CTA_ZONE, entry.zone)
            requests.append((_FAMILY[version], attrs))
    deleted = 0
    for start in range(0, len(requests), _PER_DATAGRAM):
        answers = _pipeline(sock, requests[start : start + _PER_DATAGRAM])
        deleted += sum(1 for code in answers if code == 0)
    return deleted


# Deletes per datagram: each answer is a small ACK, far below the receive buffer.
_PER_DATAGRAM = 256


def _pipeline(sock: NfNetlink, requests: list[tuple[int, bytes]]) -> list[int]:
    """Send deletes in one datagram; errno per request (0 = deleted, ENOENT = already gone)."""
    seqs = [sock.next_seq() for _ in requests]
    sock.send(
        b"".join(
            encode_message(
                IPCTNL_MSG_CT_DELETE,
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                family,
                attrs,
                subsys=NFNL_SUBSYS_CTNETLINK,
            )
            for seq, (family, attrs) in zip(seqs, requests, strict=True)
        )
    )
    index = {seq: i for i, seq in enumerate(seqs)}
    codes: list[int | None] = [None] * len(requests)
    pending = len(requests)
    while pending:
        for message in sock.recv() or ():
            i = index.get(message.seq)
            if i is None or codes[i] is not None or message.type != NLMSG_ERROR:
                continue
            code, _ = decode_error(message)
            codes[i] = code
            pending -= 1
    return [errno.EIO if code is None else code for code in codes]
