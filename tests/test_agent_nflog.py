"""nflog's wire codec against hand-made nfnetlink_log bytes (no root, no kernel).

The bytes are built here with plain ``struct`` from the layouts in
<linux/netlink.h> and <linux/netfilter/nfnetlink_log.h>, not with the
module's encoder, so a mistake in the module cannot cancel out.
"""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from edgectl.agent import nflog
from edgectl.agent.netlink.codec import encode_message, iter_messages
from edgectl.agent.netlink.constants import (
    NFT_MSG_GETGEN,
    NLM_F_ACK,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from edgectl.model import Prefix

ULOG = 4 << 8  # NFNL_SUBSYS_ULOG
PACKET = ULOG | 0
CONFIG = ULOG | 1


def attr(attr_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * (-length % 4)


def ipv4_header(src: str, dst: str = "203.0.113.25") -> bytes:
    return struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        60,
        1,
        0x4000,
        63,
        socket.IPPROTO_TCP,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )


def ipv6_header(src: str, dst: str = "2001:db8:ffff::25") -> bytes:
    return struct.pack(
        ">IHBB16s16s",
        6 << 28,
        40,
        socket.IPPROTO_TCP,
        63,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    )


def packet(
    prefix: str | None,
    payload: bytes,
    *,
    hw_protocol: int = 0x0800,
    family: int = 2,
    group: int = 7,
    seq: int | None = 0,
    flags: int = 0,
) -> bytes:
    """One NFULNL_MSG_PACKET as nfulnl_log_packet builds it (attribute order included)."""
    attrs = attr(1, struct.pack(">HBB", hw_protocol, 2, 0))  # NFULA_PACKET_HDR, hook forward
    if prefix is not None:
        attrs += attr(10, prefix.encode() + b"\0")  # NFULA_PREFIX, NUL counted
    attrs += attr(4, struct.pack(">I", 3))  # NFULA_IFINDEX_INDEV
    attrs += attr(5, struct.pack(">I", 4))  # NFULA_IFINDEX_OUTDEV
    if seq is not None:
        attrs += attr(12, struct.pack(">I", seq))  # NFULA_SEQ
    attrs += attr(9, payload)  # NFULA_PAYLOAD
    body = struct.pack("=BBH", family, 0, socket.htons(group)) + attrs
    return struct.pack("=IHHII", 16 + len(body), PACKET, flags, 0, 0) + body


def done() -> bytes:
    return struct.pack("=IHHII", 20, NLMSG_DONE, NLM_F_MULTI, 0, 0) + b"\0" * 4


def decode(raw: bytes) -> list[nflog.LogEvent]:
    return nflog.decode_datagram(iter_messages(raw))


# --- events -------------------------------------------------------------------


def test_ipv4_event() -> None:
    raw = packet("edgectl ratelimit profile=home: ", ipv4_header("100.64.1.7") + bytes(20), seq=5)
    (event,) = decode(raw)
    assert event.prefix == "edgectl ratelimit profile=home: "
    assert event.source == Prefix.parse("100.64.1.7")
    assert event.seq == 5


def test_ipv6_event() -> None:
    raw = packet(
        "edgectl op25b pool=home_v6: ",
        ipv6_header("2001:db8:1000:1ff::7"),
        hw_protocol=0x86DD,
        family=10,
    )
    (event,) = decode(raw)
    assert event.source == Prefix.parse("2001:db8:1000:1ff::7")
    assert event.prefix == "edgectl op25b pool=home_v6: "


def test_a_batch_is_several_messages_ending_in_done() -> None:
    first = packet("edgectl quarantine=smtp: ", ipv4_header("100.64.0.11"), flags=2, seq=0)
    second = packet(
        "edgectl quarantine=block: ",
        ipv6_header("2001:db8:1000:200::10"),
        hw_protocol=0x86DD,
        family=10,
        flags=2,
        seq=1,
    )
    events = decode(first + second + done())
    assert [(e.prefix, str(e.source), e.seq) for e in events] == [
        ("edgectl quarantine=smtp: ", "100.64.0.11", 0),
        ("edgectl quarantine=block: ", "2001:db8:1000:200::10", 1),
    ]


def test_unknown_hw_protocol_falls_back_to_the_ip_version() -> None:
    (v4,) = decode(packet("p", ipv4_header("100.64.0.10"), hw_protocol=0))
    (v6,) = decode(packet("p", ipv6_header("2001:db8::1"), hw_protocol=0))
    assert (str(v4.source), str(v6.source)) == ("100.64.0.10", "2001:db8::1")


@pytest.mark.parametrize(
    ("hw_protocol", "payload"),
    [
        (0x0800, ipv4_header("100.64.0.10")[:19]),  # cut before the source ends
        (0x86DD, ipv6_header("2001:db8::1")[:39]),
        (0x0806, b"\x00\x01\x08\x00" + bytes(36)),  # ARP: no IP source
        (0x0800, b""),
    ],
)
def test_no_source_when_the_copy_does_not_hold_one(hw_protocol: int, payload: bytes) -> None:
    (event,) = decode(packet("edgectl quarantine=smtp: ", payload, hw_protocol=hw_protocol))
    assert event.source is None


def test_event_without_prefix_or_seq() -> None:
    (event,) = decode(packet(None, ipv4_header("100.64.0.10"), seq=None))
    assert (event.prefix, event.seq) == ("", None)


def test_other_messages_are_not_events() -> None:
    error = struct.pack("=IHHII", 36, NLMSG_ERROR, 0, 9, 0) + struct.pack("=i", 0) + bytes(16)
    config = struct.pack("=IHHII", 20, CONFIG, 0, 0, 0) + bytes(4)
    assert decode(error + config + done()) == []


# --- requests -----------------------------------------------------------------


def test_bind_request_bytes() -> None:
    raw = nflog.config_message(0x1234, 99, nflog.bind_attrs(40))
    cmd = attr(1, bytes([1]))  # NFULA_CFG_CMD: NFULNL_CFG_CMD_BIND
    mode = attr(2, struct.pack(">IBB", 40, 2, 0))  # NFULA_CFG_MODE: range 40, COPY_PACKET
    flags = attr(6, struct.pack(">H", 1))  # NFULA_CFG_FLAGS: NFULNL_CFG_F_SEQ
    # AF_UNSPEC: the bind command ignores the family; res_id is the group, big-endian.
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + b"\x12\x34" + cmd + mode + flags
    header = struct.pack("=IHHII", 16 + len(body), CONFIG, NLM_F_REQUEST | NLM_F_ACK, 99, 0)
    assert raw == header + body


def test_nf_tables_requests_are_unchanged_by_the_subsystem_argument() -> None:
    raw = encode_message(NFT_MSG_GETGEN, NLM_F_REQUEST, 1, 0, b"")
    assert raw == struct.pack("=IHHII", 20, 0x0A10, 1, 1, 0) + b"\0\0\0\0"


# --- losses and errors ---------------------------------------------------------


def event(seq: int | None) -> nflog.LogEvent:
    return nflog.LogEvent("p", None, seq)


def test_sequence_gaps_count_lost_events() -> None:
    gaps = nflog.SeqGaps()
    gaps.see([event(0), event(1), event(2)])
    assert gaps.lost == 0
    gaps.see([event(7), event(None), event(8)])  # 3..6 were dropped
    assert gaps.lost == 4
    gaps.see([event(20)])
    assert (gaps.lost, gaps.next_seq) == (15, 21)


def test_events_dropped_before_the_first_read_count_too() -> None:
    gaps = nflog.SeqGaps()
    gaps.see([event(260)])
    assert gaps.lost == 260


def test_sequence_wraps_at_32_bits() -> None:
    gaps = nflog.SeqGaps()
    gaps.next_seq = 0xFFFFFFFE
    gaps.see([event(0xFFFFFFFE), event(0xFFFFFFFF), event(0), event(3)])
    assert gaps.lost == 2


def test_bind_refusal_names_the_likely_cause() -> None:
    error = nflog.bind_error(5, "gw-ns", errno.EPERM, "")
    assert error.errno == errno.EPERM
    assert "nflog group 5 in network namespace gw-ns is bound by another process" in str(error)
    other = nflog.bind_error(5, None, errno.EINVAL, "")
    assert "binding nflog group 5 in this network namespace failed: EINVAL" in str(other)


def test_group_out_of_range_is_refused_before_any_socket() -> None:
    with pytest.raises(ValueError, match="65536"):
        nflog.NflogSocket(65536)
