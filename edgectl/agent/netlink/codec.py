"""Netlink messages and attributes to and from bytes: pure functions, no socket.

Byte order: netlink and attribute *headers* are host order; nf_tables puts
its integer attribute *values* in network order (``NLA_PUT_BE32/BE64``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from edgectl.agent.netlink.constants import (
    NFNETLINK_V0,
    NFNL_SUBSYS_NFTABLES,
    NLA_F_NESTED,
    NLA_TYPE_MASK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_REQUEST,
    NLMSGERR_ATTR_MSG,
)

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
_NLATTR = struct.Struct("=HH")  # len, type (host order)
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (res_id is be16: pack it htons'd)
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class NlMsg:
    """One netlink message: header fields and the payload after ``struct nlmsghdr``."""

    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


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


def encode_batch_marker(msg_type: int, seq: int) -> bytes:
    """NFNL_MSG_BATCH_BEGIN/END: nfgenmsg of AF_UNSPEC, version 0, res_id = the subsystem."""
    body = struct.pack("=BB", 0, 0) + struct.pack(">H", NFNL_SUBSYS_NFTABLES)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST, seq, 0) + body
