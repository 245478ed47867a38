"""Read back the live ``table inet edgectl`` over raw nfnetlink, without listing set elements.

Why this exists: nft 1.0.6 fills its cache with *every element of every set*
before it answers any listing command -- ``nft -t list table``, ``nft list
chain`` and even ``nft get element ... { one key }`` -- so with a 1M-element
hash set each of them takes ~16 s (measured here: ``nft list counters`` too,
~17 s, when the table holds that set).  The kernel itself has no such cost:

* ``NFT_MSG_GETSET`` describes sets and never carries elements (elements
  only come from ``NFT_MSG_GETSETELEM``), so the chain/set/rule/object dumps
  below are proportional to the table's *structure*, not its data.
* A non-dump ``NFT_MSG_GETSETELEM`` with one key is a single
  ``set->ops->get`` (an rhashtable lookup for hash sets), so asking about N
  keys costs O(N) however large the set is.

Only the standard library (``socket``, ``struct``) is used: this module is the
agent's drift probe and must keep working when nothing else does.

Byte order: netlink and attribute *headers* are host order; nf_tables puts
its integer attribute *values* in network order (``NLA_PUT_BE32/BE64``).

A ``NfNetlink`` socket lives in the network namespace of the thread that
created it, for its whole life; it is not thread-safe (one exchange at a time).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

# --- <linux/netlink.h> -------------------------------------------------------
NETLINK_NETFILTER = 12
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; Python's socket module does not export it
SO_SNDBUFFORCE = 32  # likewise
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors echo only the request header, not its payload
NETLINK_EXT_ACK = 11  # errors carry the kernel's text message (NLMSGERR_ATTR_MSG)

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100  # on NLMSG_ERROR: only the request header was echoed
NLM_F_ACK_TLVS = 0x200  # on NLMSG_ERROR: extended-ack TLVs follow

NLMSGERR_ATTR_MSG = 1

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

# --- <linux/netfilter/nfnetlink.h>, <linux/netfilter.h> ---------------------
NFNL_SUBSYS_NFTABLES = 10
NFNETLINK_V0 = 0
NFPROTO_INET = 1
NFPROTO_IPV4 = 2
NFPROTO_ARP = 3
NFPROTO_NETDEV = 5
NFPROTO_BRIDGE = 7
NFPROTO_IPV6 = 10

NF_DROP = 0
NF_ACCEPT = 1

# --- <linux/netfilter/nf_tables.h> ------------------------------------------
NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NFT_MSG_NEWCHAIN = 3
NFT_MSG_GETCHAIN = 4
NFT_MSG_NEWRULE = 6
NFT_MSG_GETRULE = 7
NFT_MSG_NEWSET = 9
NFT_MSG_GETSET = 10
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFT_MSG_NEWOBJ = 18
NFT_MSG_GETOBJ = 19

NFTA_TABLE_NAME = 1

NFTA_HOOK_HOOKNUM = 1
NFTA_HOOK_PRIORITY = 2

NFTA_CHAIN_TABLE = 1
NFTA_CHAIN_HANDLE = 2
NFTA_CHAIN_NAME = 3
NFTA_CHAIN_HOOK = 4
NFTA_CHAIN_POLICY = 5
NFTA_CHAIN_TYPE = 7

NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_HANDLE = 3
NFTA_RULE_USERDATA = 7

NFT_SET_ANONYMOUS = 0x1
NFT_SET_CONSTANT = 0x2
NFT_SET_INTERVAL = 0x4
NFT_SET_MAP = 0x8
NFT_SET_TIMEOUT = 0x10
NFT_SET_EVAL = 0x20
NFT_SET_OBJECT = 0x40
NFT_SET_CONCAT = 0x80
NFT_SET_EXPR = 0x100

NFTA_SET_DESC_SIZE = 1

NFTA_SET_TABLE = 1
NFTA_SET_NAME = 2
NFTA_SET_FLAGS = 3
NFTA_SET_KEY_TYPE = 4
NFTA_SET_KEY_LEN = 5
NFTA_SET_DATA_TYPE = 6
NFTA_SET_DATA_LEN = 7
NFTA_SET_DESC = 9
NFTA_SET_TIMEOUT = 11
NFTA_SET_USERDATA = 13

NFTA_LIST_ELEM = 1

NFTA_SET_ELEM_KEY = 1

NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3

NFTA_DATA_VALUE = 1

NFTA_GEN_ID = 1

NFT_OBJECT_COUNTER = 1
NFTA_OBJ_TABLE = 1
NFTA_OBJ_NAME = 2
NFTA_OBJ_TYPE = 3
NFTA_OBJ_DATA = 4

NFTA_COUNTER_BYTES = 1
NFTA_COUNTER_PACKETS = 2

# libnftnl <libnftnl/udata.h>: rule userdata is a TLV list (u8 type, u8 len);
# nft stores ``comment "..."`` as type 0, NUL-terminated.
NFTNL_UDATA_RULE_COMMENT = 0

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
_NLATTR = struct.Struct("=HH")  # len, type (host order)
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (res_id is be16: pack it htons'd)
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")

# Hook numbers are per family (<linux/netfilter.h>, <linux/netfilter_arp.h>);
# ip, ip6, inet and bridge share NF_INET_* numbering.
_INET_HOOKS = {
    0: "prerouting",
    1: "input",
    2: "forward",
    3: "output",
    4: "postrouting",
    5: "ingress",
}
_HOOK_NAMES: dict[int, dict[int, str]] = {
    NFPROTO_INET: _INET_HOOKS,
    NFPROTO_IPV4: _INET_HOOKS,
    NFPROTO_IPV6: _INET_HOOKS,
    NFPROTO_BRIDGE: _INET_HOOKS,
    NFPROTO_ARP: {0: "input", 1: "output", 2: "forward"},
    NFPROTO_NETDEV: {0: "ingress", 1: "egress"},
}
_POLICY_NAMES = {NF_DROP: "drop", NF_ACCEPT: "accept"}

# A dump arrives in skbs of at most ~32 KiB and non-dump replies are a page or
# so, so 1 MiB per recv never truncates; MSG_TRUNC still guards it.
DEFAULT_RECV_BUFFER = 1 << 20
# Every queued reply is charged at its skb truesize, not its length: measured
# on 6.18, one lookup (NEWSETELEM reply + ACK) holds ~1 KiB of SO_RCVBUF until
# read.  4 MiB (8 MiB effective: the kernel doubles it) leaves room for
# thousands of lookups per window and for the largest dump skbs.
DEFAULT_SO_RCVBUF = 4 << 20
# Upper bound on any single wait for the kernel (see NfNetlink.__init__).
DEFAULT_TIMEOUT = 10.0
# Lookups per send(): the kernel answers each one before send() returns, so
# the replies of a whole window sit in our receive queue at once.
DEFAULT_WINDOW = 256


# --- errors -----------------------------------------------------------------


class NetlinkError(OSError):
    """The kernel answered a request with NLMSG_ERROR (or a dump ended in error).

    ``errno`` is the positive errno; ``strerror`` includes the kernel's
    extended-ack text when it sent one.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)


# --- data -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleInfo:
    handle: int
    comment: str | None


@dataclass(frozen=True, slots=True)
class ChainInfo:
    name: str
    hook: str | None  # e.g. "forward"; None for a regular chain
    priority: int | None
    policy: str | None  # "accept" / "drop"; only base chains have one
    type: str | None  # "filter", "nat", "route"
    rules: list[RuleInfo]  # kernel (evaluation) order


@dataclass(frozen=True, slots=True)
class SetInfo:
    name: str
    key_type: int  # nft datatype id (ipv4_addr = 7, ipv6_addr = 8)
    key_len: int  # bytes
    flags: int  # NFT_SET_* bits
    data_type: int | None  # maps only
    data_len: int | None
    size: int | None  # NFTA_SET_DESC_SIZE; absent when the set is unbounded
    timeout_ms: int | None  # default element timeout
    userdata: bytes | None  # raw libnftnl TLVs (key byte order, typeof, comment ...)


@dataclass(frozen=True, slots=True)
class TableLayout:
    """The table's structure as the kernel holds it, at one ruleset generation."""

    chains: dict[str, ChainInfo]
    sets: dict[str, SetInfo]  # named sets only; anonymous ones belong to their rule
    counters: dict[str, tuple[int, int]]  # name -> (packets, bytes)
    generation: int  # NFTA_GEN_ID the four dumps were all taken at


@dataclass(frozen=True, slots=True)
class NlMsg:
    """One netlink message: header fields and the payload after ``struct nlmsghdr``."""

    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


# --- codec (pure) -------------------------------------------------------------


def _align4(n: int) -> int:
    return (n + 3) & ~3


def nla(attr_type: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, attr_type) + payload + b"\0" * (_align4(length) - length)


def nla_nested(attr_type: int, *children: bytes) -> bytes:
    return nla(attr_type | NLA_F_NESTED, b"".join(children))


def nla_str(attr_type: int, value: str) -> bytes:
    # nf_tables name attributes are NLA_STRING with the NUL counted (as libnftnl sends them).
    return nla(attr_type, value.encode() + b"\0")


def nla_be32(attr_type: int, value: int) -> bytes:
    return nla(attr_type, _BE32.pack(value))


def iter_attrs(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(type without NESTED/BYTEORDER flags, payload) for each attribute in ``buf``."""
    off = 0
    end = len(buf)
    while off + _NLATTR.size <= end:
        length, attr_type = _NLATTR.unpack_from(buf, off)
        if length < _NLATTR.size or off + length > end:
            raise ValueError(f"malformed attribute at offset {off}: length {length}")
        yield attr_type & NLA_TYPE_MASK, bytes(buf[off + _NLATTR.size : off + length])
        off += _align4(length)


def parse_attrs(buf: bytes) -> dict[int, bytes]:
    """Attributes by type; a repeated type keeps the last one (nla_parse does the same)."""
    return dict(iter_attrs(buf))


def be32(value: bytes) -> int:
    return int(_BE32.unpack(value[:4])[0])


def be64(value: bytes) -> int:
    return int(_BE64.unpack(value[:8])[0])


def cstr(value: bytes) -> str:
    """A NUL-terminated NLA_STRING (the kernel counts the NUL)."""
    return value.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def encode_message(
    msg: int,
    flags: int,
    seq: int,
    family: int,
    attrs: bytes,
    *,
    pid: int = 0,
    subsys: int = NFNL_SUBSYS_NFTABLES,
    res_id: int = 0,
) -> bytes:
    """An nfnetlink request (nf_tables unless ``subsys`` says otherwise).

    nlmsghdr + nfgenmsg + attributes; ``res_id`` is the subsystem's resource
    (the nflog group number for NFNL_SUBSYS_ULOG), sent big-endian.
    """
    body = _NFGENMSG.pack(family, NFNETLINK_V0, socket.htons(res_id)) + attrs
    msg_type = (subsys << 8) | msg
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags, seq, pid) + body


def iter_messages(buf: bytes | memoryview) -> Iterator[NlMsg]:
    """Split one datagram into netlink messages."""
    off = 0
    end = len(buf)
    while off + _NLMSGHDR.size <= end:
        length, msg_type, flags, seq, pid = _NLMSGHDR.unpack_from(buf, off)
        if length < _NLMSGHDR.size or off + length > end:
            raise ValueError(f"malformed netlink message at offset {off}: length {length}")
        yield NlMsg(msg_type, flags, seq, pid, bytes(buf[off + _NLMSGHDR.size : off + length]))
        off += _align4(length)


def nft_attrs(msg: NlMsg) -> dict[int, bytes]:
    """Attributes of an nf_tables message (they follow the 4-byte nfgenmsg)."""
    return parse_attrs(msg.payload[_NFGENMSG.size :])


def decode_error(msg: NlMsg) -> tuple[int, str]:
    """(positive errno, kernel text or "") of an NLMSG_ERROR; errno 0 is an ACK."""
    payload = msg.payload
    (code,) = struct.unpack_from("=i", payload, 0)
    text = ""
    if msg.flags & NLM_F_ACK_TLVS and len(payload) >= 4 + _NLMSGHDR.size:
        # struct nlmsgerr = error + the request's nlmsghdr (+ its payload
        # unless NETLINK_CAP_ACK capped it), then the extended-ack TLVs.
        echoed = _NLMSGHDR.size
        if not msg.flags & NLM_F_CAPPED:
            (orig_len,) = struct.unpack_from("=I", payload, 4)
            echoed = _align4(orig_len)
        tlvs = parse_attrs(payload[4 + echoed :])
        if NLMSGERR_ATTR_MSG in tlvs:
            text = cstr(tlvs[NLMSGERR_ATTR_MSG])
    return -code, text


def decode_rule_comment(userdata: bytes) -> str | None:
    """The ``comment "..."`` of a rule from its NFTA_RULE_USERDATA TLVs (libnftnl udata)."""
    off = 0
    while off + 2 <= len(userdata):
        kind, length = userdata[off], userdata[off + 1]
        value = userdata[off + 2 : off + 2 + length]
        if len(value) < length:
            raise ValueError(f"truncated rule userdata TLV at offset {off}")
        if kind == NFTNL_UDATA_RULE_COMMENT:
            return cstr(value)
        off += 2 + length
    return None


def decode_gen(msg: NlMsg) -> int:
    return be32(nft_attrs(msg)[NFTA_GEN_ID])


def hook_name(family: int, hooknum: int) -> str:
    return _HOOK_NAMES.get(family, {}).get(hooknum, f"hook{hooknum}")


def decode_chain(msg: NlMsg, family: int) -> tuple[str, ChainInfo]:
    """(table, chain without rules) from an NFT_MSG_NEWCHAIN."""
    a = nft_attrs(msg)
    hook: str | None = None
    priority: int | None = None
    if NFTA_CHAIN_HOOK in a:
        h = parse_attrs(a[NFTA_CHAIN_HOOK])
        if NFTA_HOOK_HOOKNUM in h:
            hook = hook_name(family, be32(h[NFTA_HOOK_HOOKNUM]))
        if NFTA_HOOK_PRIORITY in h:
            # The kernel sends the s32 priority as a be32.
            (priority,) = struct.unpack(">i", h[NFTA_HOOK_PRIORITY][:4])
    policy: str | None = None
    if NFTA_CHAIN_POLICY in a:
        verdict = be32(a[NFTA_CHAIN_POLICY])
        policy = _POLICY_NAMES.get(verdict, f"verdict{verdict}")
    chain_type = cstr(a[NFTA_CHAIN_TYPE]) if NFTA_CHAIN_TYPE in a else None
    info = ChainInfo(
        name=cstr(a[NFTA_CHAIN_NAME]),
        hook=hook,
        priority=priority,
        policy=policy,
        type=chain_type,
        rules=[],
    )
    return cstr(a[NFTA_CHAIN_TABLE]), info


def decode_rule(msg: NlMsg) -> tuple[str, str, RuleInfo]:
    """(table, chain, rule) from an NFT_MSG_NEWRULE."""
    a = nft_attrs(msg)
    comment = decode_rule_comment(a[NFTA_RULE_USERDATA]) if NFTA_RULE_USERDATA in a else None
    rule = RuleInfo(handle=be64(a[NFTA_RULE_HANDLE]), comment=comment)
    return cstr(a[NFTA_RULE_TABLE]), cstr(a[NFTA_RULE_CHAIN]), rule


def decode_set(msg: NlMsg) -> tuple[str, SetInfo]:
    """(table, set) from an NFT_MSG_NEWSET (which never carries elements)."""
    a = nft_attrs(msg)
    size: int | None = None
    if NFTA_SET_DESC in a:
        desc = parse_attrs(a[NFTA_SET_DESC])
        if NFTA_SET_DESC_SIZE in desc:
            size = be32(desc[NFTA_SET_DESC_SIZE])
    info = SetInfo(
        name=cstr(a[NFTA_SET_NAME]),
        key_type=be32(a[NFTA_SET_KEY_TYPE]) if NFTA_SET_KEY_TYPE in a else 0,
        key_len=be32(a[NFTA_SET_KEY_LEN]),
        flags=be32(a[NFTA_SET_FLAGS]) if NFTA_SET_FLAGS in a else 0,
        data_type=be32(a[NFTA_SET_DATA_TYPE]) if NFTA_SET_DATA_TYPE in a else None,
        data_len=be32(a[NFTA_SET_DATA_LEN]) if NFTA_SET_DATA_LEN in a else None,
        size=size,
        # Milliseconds on the wire: the kernel converts jiffies with
        # nf_jiffies64_to_msecs before NLA_PUT_BE64(NFTA_SET_TIMEOUT).
        timeout_ms=be64(a[NFTA_SET_TIMEOUT]) if NFTA_SET_TIMEOUT in a else None,
        userdata=a.get(NFTA_SET_USERDATA),
    )
    return cstr(a[NFTA_SET_TABLE]), info


def decode_obj(msg: NlMsg) -> tuple[str, str, int, dict[int, bytes]]:
    """(table, name, NFT_OBJECT_* type, NFTA_OBJ_DATA attributes) from an NFT_MSG_NEWOBJ."""
    a = nft_attrs(msg)
    data = parse_attrs(a[NFTA_OBJ_DATA]) if NFTA_OBJ_DATA in a else {}
    return cstr(a[NFTA_OBJ_TABLE]), cstr(a[NFTA_OBJ_NAME]), be32(a[NFTA_OBJ_TYPE]), data


def decode_counter(data: dict[int, bytes]) -> tuple[int, int]:
    """(packets, bytes) of a counter object's NFTA_OBJ_DATA."""
    return be64(data.get(NFTA_COUNTER_PACKETS, bytes(8))), be64(
        data.get(NFTA_COUNTER_BYTES, bytes(8))
    )


def getsetelem_attrs(table: str, set_name: str, key: bytes) -> bytes:
    """NFT_MSG_GETSETELEM attributes asking for exactly one key."""
    element = nla_nested(NFTA_LIST_ELEM, nla_nested(NFTA_SET_ELEM_KEY, nla(NFTA_DATA_VALUE, key)))
    return (
        nla_str(NFTA_SET_ELEM_LIST_TABLE, table)
        + nla_str(NFTA_SET_ELEM_LIST_SET, set_name)
        + nla_nested(NFTA_SET_ELEM_LIST_ELEMENTS, element)
    )


def encode_ipv4(text: str) -> bytes:
    """An IPv4 address as a 4-byte set key (network order)."""
    return socket.inet_pton(socket.AF_INET, text)


def encode_ipv6(text: str) -> bytes:
    """An IPv6 address as a 16-byte set key (network order); mask prefixes before calling."""
    return socket.inet_pton(socket.AF_INET6, text)


# --- socket -------------------------------------------------------------------


class NfNetlink:
    """An AF_NETLINK/NETLINK_NETFILTER socket in the creating thread's network namespace."""

    def __init__(
        self,
        *,
        rcvbuf: int = DEFAULT_SO_RCVBUF,
        recv_buffer: int = DEFAULT_RECV_BUFFER,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
        )
        try:
            # A guard, not a pacing mechanism: the kernel answers GETs while
            # our send() runs and dumps as we read, so a wait this long means
            # an answer was lost, and a bounded TimeoutError beats a hung agent.
            self._timeout = timeout
            self._sock.settimeout(timeout)
            self._set_rcvbuf(rcvbuf)
            for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                # Optional niceties (kernels >= 4.3 / 4.12); errors work without them.
                with contextlib.suppress(OSError):
                    self._sock.setsockopt(SOL_NETLINK, option, 1)
            self._sock.bind((0, 0))
            self.portid: int = self._sock.getsockname()[0]
        except BaseException:
            self._sock.close()
            raise
        self._buf = bytearray(recv_buffer)
        self._view = memoryview(self._buf)
        # libmnl seeds with time(); any start works as long as replies are matched by seq.
        self._seq = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF

    def _set_rcvbuf(self, size: int) -> None:
        # SO_RCVBUFFORCE (CAP_NET_ADMIN) ignores net.core.rmem_max (often 208 KiB);
        # without the capability fall back to what rmem_max allows.
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    @property
    def rcvbuf(self) -> int:
        """Effective SO_RCVBUF (the kernel doubles the requested value for overhead)."""
        return int(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NfNetlink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def ensure_sndbuf(self, size: int) -> None:
        """Make one datagram of ``size`` bytes fit the send buffer (root may exceed wmem_max)."""
        # The kernel doubles the value set and reports the doubled figure.
        if self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < size * 2:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
            except PermissionError:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def send(self, data: bytes) -> None:
        # A netlink send is one datagram; the kernel processes every message in
        # it (netlink_rcv_skb loops) before send() returns.
        sent = self._sock.send(data)
        if sent != len(data):
            raise NetlinkError(_errno.EMSGSIZE, f"short netlink send: {sent} of {len(data)}")

    def recv(self, *, wait: bool = True) -> list[NlMsg] | None:
        """One datagram's messages; None if ``wait`` is False and nothing is queued.

        Waits at most the socket timeout (TimeoutError).  ENOBUFS (an
        OSError) means the kernel dropped replies because our receive queue
        was full.
        """
        # With a timeout set, CPython polls for readiness *before* recv, so
        # MSG_DONTWAIT alone would still wait; timeout 0.0 makes it return.
        # Both modes keep the fd O_NONBLOCK, so switching is only a field write
        # plus one ioctl.
        want = self._timeout if wait else 0.0
        if self._sock.gettimeout() != want:
            self._sock.settimeout(want)
        try:
            n = self._sock.recv_into(self._view, len(self._buf), socket.MSG_TRUNC)
        except BlockingIOError:
            return None
        if n > len(self._buf):
            raise NetlinkError(_errno.EMSGSIZE, f"netlink datagram of {n} bytes truncated")
        return list(iter_messages(self._view[:n]))

    def dump(self, msg: int, family: int, attrs: bytes = b"") -> list[NlMsg]:
        """A NLM_F_DUMP request; all data messages up to NLMSG_DONE.

        nf_tables marks messages NLM_F_DUMP_INTR when the ruleset generation
        changed between the skbs of one dump (nl_dump_check_consistent); the
        result is then not one consistent view, so that raises EINTR (the
        same thing libmnl reports to nft, which retries).
        """
        seq = self.next_seq()
        self.send(encode_message(msg, NLM_F_REQUEST | NLM_F_DUMP, seq, family, attrs))
        out: list[NlMsg] = []
        interrupted = False
        while True:
            for m in self.recv() or ():
                if m.seq != seq:
                    continue  # a late reply to an abandoned earlier request
                interrupted = interrupted or bool(m.flags & NLM_F_DUMP_INTR)
                if m.type == NLMSG_DONE:
                    (code,) = struct.unpack_from("=i", m.payload, 0) if m.payload else (0,)
                    if code < 0:
                        raise NetlinkError(-code, f"dump of message {msg} failed")
                    if interrupted:
                        raise NetlinkError(_errno.EINTR, "dump interrupted by a ruleset change")
                    return out
                if m.type == NLMSG_ERROR:
                    code, text = decode_error(m)
                    raise NetlinkError(code, text or f"dump of message {msg} refused")
                if m.type in (NLMSG_NOOP, NLMSG_OVERRUN):
                    continue
                out.append(m)

    def request(self, msg: int, family: int, attrs: bytes = b"") -> list[NlMsg]:
        """One non-dump request with NLM_F_ACK; the data replies before the ACK."""
        (answer,) = self.pipeline([(msg, family, attrs)])
        if answer is None:
            raise NetlinkError(_errno.ENOBUFS, "the kernel dropped the reply (receive queue full)")
        code, text, replies = answer
        if code:
            raise NetlinkError(code, text or os.strerror(code))
        return replies

    def pipeline(
        self, requests: Sequence[tuple[int, int, bytes]]
    ) -> list[tuple[int, str, list[NlMsg]] | None]:
        """Send non-dump requests in one datagram, then collect every answer.

        Each request carries NLM_F_ACK, so each ends with exactly one
        NLMSG_ERROR (errno 0 = success) and its data replies come before
        it; answers are matched by sequence number.  Returns (errno, kernel
        text, data replies) per request, in request order, or None for a
        request whose answer the kernel dropped.

        Why drops are detected this way: nfnetlink handles non-batch
        requests synchronously inside our send() (netlink_unicast_kernel ->
        nfnetlink_rcv), so when send() returns every answer is either queued
        or already dropped.  A full queue makes the kernel drop answers and
        report ENOBUFS *once* (it sets NETLINK_S_CONGESTED and stays quiet
        until the queue has been emptied), reported ahead of the answers
        still queued.  So once ENOBUFS has been seen, read without blocking
        until the queue is empty: whatever is still unanswered then was
        dropped (waiting for it would hang until the timeout), and the
        empty queue re-arms the kernel's ENOBUFS report for next time.
        """
        if not requests:
            return []
        seqs = [self.next_seq() for _ in requests]
        index = {seq: i for i, seq in enumerate(seqs)}
        self.send(
            b"".join(
                encode_message(msg, NLM_F_REQUEST | NLM_F_ACK, seq, family, attrs)
                for seq, (msg, family, attrs) in zip(seqs, requests, strict=True)
            )
        )
        replies: list[list[NlMsg]] = [[] for _ in requests]
        results: list[tuple[int, str, list[NlMsg]] | None] = [None] * len(requests)
        pending = len(requests)
        overrun = False
        while pending:
            try:
                # Block only while no overrun was seen: then an answer may
                # legitimately still be on its way (bounded by the timeout).
                batch = self.recv(wait=not overrun)
            except OSError as exc:
                if exc.errno != _errno.ENOBUFS:
                    raise
                overrun = True
                continue
            if batch is None:
                break  # queue drained after an overrun: the rest was dropped
            for m in batch:
                i = index.get(m.seq)
                if i is None or results[i] is not None:
                    continue
                if m.type == NLMSG_ERROR:
                    code, text = decode_error(m)
                    results[i] = (code, text, replies[i])
                    pending -= 1
                elif m.type not in (NLMSG_NOOP, NLMSG_DONE, NLMSG_OVERRUN):
                    replies[i].append(m)
        return results


# --- queries ------------------------------------------------------------------


def generation(sock: NfNetlink) -> int:
    """The namespace's ruleset generation id (NFTA_GEN_ID).

    Every committed nf_tables transaction bumps it (element add/delete
    included); packet-path updates of dynamic sets and counter increments
    do not.
    """
    for m in sock.request(NFT_MSG_GETGEN, socket.AF_UNSPEC):
        if m.type & 0xFF == NFT_MSG_NEWGEN:
            return decode_gen(m)
    raise NetlinkError(_errno.EPROTO, "NFT_MSG_GETGEN answered without NFT_MSG_NEWGEN")


def table_exists(sock: NfNetlink, family: int, table: str) -> bool:
    try:
        sock.request(NFT_MSG_GETTABLE, family, nla_str(NFTA_TABLE_NAME, table))
    except NetlinkError as exc:
        if exc.errno == _errno.ENOENT:
            return False
        raise
    return True


def _read_table_once(sock: NfNetlink, family: int, table: str) -> TableLayout | None:
    if not table_exists(sock, family, table):
        return None
    # The family in nfgenmsg restricts every dump to that family.  The kernel
    # also filters set, rule and object dumps by the table attribute, but
    # not chain dumps (nf_tables_dump_chains walks every table), so all four
    # are filtered again here.
    chains: dict[str, ChainInfo] = {}
    for m in sock.dump(NFT_MSG_GETCHAIN, family, nla_str(NFTA_CHAIN_TABLE, table)):
        owner, chain = decode_chain(m, family)
        if owner == table:
            chains[chain.name] = chain
    for m in sock.dump(NFT_MSG_GETRULE, family, nla_str(NFTA_RULE_TABLE, table)):
        owner, chain_name, rule = decode_rule(m)
        if owner == table and chain_name in chains:
            chains[chain_name].rules.append(rule)
    sets: dict[str, SetInfo] = {}
    for m in sock.dump(NFT_MSG_GETSET, family, nla_str(NFTA_SET_TABLE, table)):
        owner, info = decode_set(m)
        # Anonymous sets (``ip saddr { ... }`` inside a rule, named __set%d)
        # are part of their rule, not objects edgectl declares.
        if owner == table and not info.flags & NFT_SET_ANONYMOUS:
            sets[info.name] = info
    counters: dict[str, tuple[int, int]] = {}
    obj_filter = nla_str(NFTA_OBJ_TABLE, table) + nla_be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER)
    for m in sock.dump(NFT_MSG_GETOBJ, family, obj_filter):
        owner, name, obj_type, data = decode_obj(m)
        if owner == table and obj_type == NFT_OBJECT_COUNTER:
            counters[name] = decode_counter(data)
    return TableLayout(chains=chains, sets=sets, counters=counters, generation=0)


def read_table(
    sock: NfNetlink, family: int, table: str, *, attempts: int = 5
) -> TableLayout | None:
    """The table's chains (with rule handles and comments), named sets and counters.

    None if the table does not exist.  The table-check and four dumps are
    separate requests, so a commit can land between them; the generation is
    read before and after and the whole read repeated (up to ``attempts``
    times) until both agree, so the result is one generation's view.
    """
    for _ in range(attempts):
        before = generation(sock)
        try:
            layout = _read_table_once(sock, family, table)
        except NetlinkError as exc:
            # EINTR: a dump saw the generation move.  ENOENT: the table
            # vanished between the existence check and a dump.
            if exc.errno in (_errno.EINTR, _errno.ENOENT):
                continue
            raise
        if generation(sock) != before:
            continue
        if layout is None:
            return None
        return TableLayout(
            chains=layout.chains, sets=layout.sets, counters=layout.counters, generation=before
        )
    raise NetlinkError(
        _errno.EAGAIN, f"ruleset kept changing; no consistent read of {table} in {attempts} tries"
    )


def get_set(sock: NfNetlink, family: int, table: str, set_name: str) -> SetInfo | None:
    """One set's description (non-dump NFT_MSG_GETSET), or None if it does not exist."""
    attrs = nla_str(NFTA_SET_TABLE, table) + nla_str(NFTA_SET_NAME, set_name)
    try:
        replies = sock.request(NFT_MSG_GETSET, family, attrs)
    except NetlinkError as exc:
        if exc.errno == _errno.ENOENT:
            return None
        raise
    for m in replies:
        if m.type & 0xFF == NFT_MSG_NEWSET:
            return decode_set(m)[1]
    return None


def missing_elements(
    sock: NfNetlink,
    family: int,
    table: str,
    set_name: str,
    keys: Iterable[bytes],
    *,
    window: int = DEFAULT_WINDOW,
) -> list[bytes]:
    """The keys that are not elements of the set, in the order given.

    One non-dump NFT_MSG_GETSETELEM per key (ENOENT = missing), ``window``
    of them per datagram: O(len(keys)) whatever the set's size.  An element
    whose timeout has passed but which garbage collection has not reaped
    yet counts as missing (the kernel's ->get checks expiry).

    Raises NetlinkError(ENOENT) if the set itself does not exist -- the
    kernel's answer to every key would be ENOENT too, which must not read
    as "all keys missing".  Raises ValueError for interval sets (there
    the kernel answers with whichever interval *contains* the key -- seen on
    6.18: 10.1.2.3 "found" in { 10.0.0.0/8 } -- so a deleted element
    covered by a wider one would not show as missing), for keys whose
    length is not the set's key length (the kernel would say EINVAL) and
    for a window below 1.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    info = get_set(sock, family, table, set_name)
    if info is None:
        raise NetlinkError(_errno.ENOENT, f"no set {set_name} in table {table}")
    if info.flags & NFT_SET_INTERVAL:
        raise ValueError(f"set {set_name} is an interval set; exact-key lookups do not apply")
    todo = list(keys)
    for key in todo:
        if len(key) != info.key_len:
            raise ValueError(
                f"key {key.hex()} is {len(key)} bytes; set {set_name} wants {info.key_len}"
            )
    codes: list[int | None] = [None] * len(todo)
    pending = list(range(len(todo)))
    while pending:
        chunk = pending[:window]
        answers = sock.pipeline(
            [
                (NFT_MSG_GETSETELEM, family, getsetelem_attrs(table, set_name, todo[i]))
                for i in chunk
            ]
        )
        lost: list[int] = []
        for i, answer in zip(chunk, answers, strict=True):
            # ENOBUFS as the answer itself: the NEWSETELEM reply was dropped
            # and the kernel (nfnetlink_unicast) said so in the ACK instead.
            if answer is None or answer[0] == _errno.ENOBUFS:
                lost.append(i)
                continue
            code, text, _replies = answer
            if code not in (0, _errno.ENOENT):
                raise NetlinkError(code, text or f"lookup of {todo[i].hex()} in {set_name} failed")
            codes[i] = code
        if lost:
            # The receive queue overflowed (SO_RCVBUF smaller than a window
            # of replies); the lookups are reads, so ask again, fewer at a time.
            if window == 1:
                raise NetlinkError(_errno.ENOBUFS, "lookup replies dropped even one at a time")
            window = max(1, window // 2)
        pending = lost + pending[len(chunk) :]
    return [key for key, code in zip(todo, codes, strict=True) if code == _errno.ENOENT]
