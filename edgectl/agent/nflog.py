"""Block evidence from the kernel: a stdlib NFLOG (nfnetlink_log) subscriber.

The table's block rules log with ``log prefix "edgectl <what>: " group G``
when ``settings.log_group`` is set (render.py ``log()``).  The kernel then
hands each logged packet to whichever netlink socket of the *same network
namespace* bound group G; this module is that socket, decoding each event
into (prefix text, source address) and nothing more.

Kernel semantics this relies on (net/netfilter/nfnetlink_log.c, checked on
6.18 by netns-tests/test_nflog.py):

* One socket per group and namespace.  Binding a group another socket holds
  is refused with EPERM (the instance exists with another owner's portid;
  EBUSY is only for binding the same group twice on one socket).
* The group is bound with nfgenmsg family AF_UNSPEC: the bind command
  ignores the family.  ``NFULNL_CFG_CMD_PF_BIND``/``PF_UNBIND`` are *not*
  sent -- they choose the namespace's default logger for a family (what a
  ``log`` without ``group`` uses) and would change other tools' logging.
  An ``inet`` table logs each packet with its own family (NFPROTO_IPV4 or
  NFPROTO_IPV6 in nfgenmsg); one bound group receives both.
* Closing the socket destroys the instance (NETLINK_URELEASE), so a crashed
  agent never keeps the group from its successor.
* Copy mode NFULNL_COPY_PACKET with a 40-byte range: the IPv6 fixed header
  (the IPv4 one is 20), which holds the source address; nothing of the
  subscriber's data is copied.
* NFULNL_CFG_F_SEQ numbers the events of the instance from 0; when the
  receive queue is full the kernel drops a whole batch and reports ENOBUFS
  once, so the gap in the numbers is the exact count of events lost.
* Events are batched (the kernel's defaults: up to 100 events, or 1 s, per
  datagram), so a flood costs one recv per batch, not per packet.

A ``NflogSocket`` lives in the network namespace it was opened in; it is not
thread-safe (one reader).
"""

from __future__ import annotations

import errno as _errno
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from edgectl.agent.netlink.codec import (
    NlMsg,
    be32,
    cstr,
    decode_error,
    encode_message,
    nla,
    parse_attrs,
)
from edgectl.agent.netlink.constants import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR
from edgectl.agent.netlink.nfsocket import NetlinkError, NfNetlink
from edgectl.agent.netns import inside
from edgectl.model.prefix import Prefix

# --- <linux/netfilter/nfnetlink.h>, <linux/netfilter/nfnetlink_log.h> ----------
NFNL_SUBSYS_ULOG = 4

NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1

NFULA_PACKET_HDR = 1
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_SEQ = 12

NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_FLAGS = 6

NFULNL_CFG_CMD_BIND = 1

NFULNL_COPY_PACKET = 0x02
NFULNL_CFG_F_SEQ = 0x0001

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD

PACKET_TYPE = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET

# Enough of the packet for the source address: the IPv6 fixed header.
COPY_RANGE = 40
# One datagram is one kernel batch; the kernel caps a batch skb at 128 KiB
# (NFULA_CFG_NLBUFSIZ), so this never truncates (MSG_TRUNC still guards it).
RECV_BUFFER = 256 << 10
# Each log rule may send 2 x log_per_second events at once (its burst).
# Measured on 6.18 with log_per_second = 10,000 (the model's maximum) under a
# SYN flood: 1 MiB overran at the first burst (~2,000 of 20,000 events
# lost), 4 MiB (8 MiB charged, only while events wait) lost none, with one
# or two rules hit.  Overruns are survived either way, and counted.
DEFAULT_RCVBUF = 4 << 20
# How long one read waits for an event: also how soon a reader notices it
# was asked to stop or rebind.
DEFAULT_WAIT = 0.5
# Datagrams drained per read after the first (a bound on one read's work).
_DRAIN = 64

_PACKET_HDR = struct.Struct(">HBB")  # hw_protocol (be16), hook, pad
_MODE = struct.Struct(">IBB")  # struct nfulnl_msg_config_mode: copy_range (be32), mode, pad
_SEQ_SPAN = 1 << 32


class NflogError(OSError):
    """The group could not be bound (or configured); the text says what to do."""

    def __str__(self) -> str:
        # The sentence alone: it is shown to operators as the report's reason.
        return str(self.strerror)


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One logged packet: the rule's prefix and who sent the packet."""

    prefix: str  # NFULA_PREFIX as the rule wrote it, e.g. "edgectl op25b pool=home: "
    source: Prefix | None  # the source address (a host prefix); None if not IPv4/IPv6
    seq: int | None = None  # NFULA_SEQ: the instance's event number


# --- codec (pure) -------------------------------------------------------------


def config_message(group: int, seq: int, attrs: bytes, *, family: int = socket.AF_UNSPEC) -> bytes:
    """An NFULNL_MSG_CONFIG request for ``group`` that asks for an ACK."""
    return encode_message(
        NFULNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family,
        attrs,
        subsys=NFNL_SUBSYS_ULOG,
        res_id=group,
    )


def bind_attrs(copy_range: int = COPY_RANGE) -> bytes:
    """Bind, copy ``copy_range`` bytes of each packet, number the events.

    One message, so the group is either bound *and* configured or not at
    all: the kernel runs the command first, then applies mode and flags to
    the new instance.
    """
    return (
        nla(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND]))
        + nla(NFULA_CFG_MODE, _MODE.pack(copy_range, NFULNL_COPY_PACKET, 0))
        + nla(NFULA_CFG_FLAGS, struct.pack(">H", NFULNL_CFG_F_SEQ))
    )


def source_address(hw_protocol: int, payload: bytes) -> Prefix | None:
    """The source address from the start of the network header.

    ``hw_protocol`` (skb->protocol) says IPv4 or IPv6; when it is neither
    (0 for some locally generated packets) the header's version nibble does.
    """
    if hw_protocol == ETH_P_IP:
        version = 4
    elif hw_protocol == ETH_P_IPV6:
        version = 6
    elif payload:
        version = payload[0] >> 4
    else:
        return None
    if version == 4 and len(payload) >= 20:
        return Prefix(4, int.from_bytes(payload[12:16], "big"), 32)
    if version == 6 and len(payload) >= 40:
        return Prefix(6, int.from_bytes(payload[8:24], "big"), 128)
    return None


def decode_packet(msg: NlMsg) -> LogEvent | None:
    """An NFULNL_MSG_PACKET as a LogEvent; None for any other message."""
    if msg.type != PACKET_TYPE or len(msg.payload) < 4:
        return None
    attrs = parse_attrs(msg.payload[4:])  # after struct nfgenmsg
    hw_protocol = 0
    if NFULA_PACKET_HDR in attrs and len(attrs[NFULA_PACKET_HDR]) >= _PACKET_HDR.size:
        hw_protocol = _PACKET_HDR.unpack_from(attrs[NFULA_PACKET_HDR])[0]
    prefix = cstr(attrs[NFULA_PREFIX]) if NFULA_PREFIX in attrs else ""
    seq = be32(attrs[NFULA_SEQ]) if len(attrs.get(NFULA_SEQ, b"")) >= 4 else None
    return LogEvent(prefix, source_address(hw_protocol, attrs.get(NFULA_PAYLOAD, b"")), seq)


def decode_datagram(messages: Iterable[NlMsg]) -> list[LogEvent]:
    """The events of one datagram (a batch ends with NLMSG_DONE, which is skipped)."""
    events = []
    for msg in messages:
        event = decode_packet(msg)
        if event is not None:
            events.append(event)
    return events


def bind_error(group: int, netns: str | None, code: int, text: str) -> NflogError:
    """The kernel's refusal of a bind, as an operator reads it."""
    where = f"network namespace {netns}" if netns else "this network namespace"
    if code in (_errno.EPERM, _errno.EBUSY):
        reason = (
            f"nflog group {group} in {where} is bound by another process "
            "(a second agent, ulogd2, a capture tool?), or the agent lacks CAP_NET_ADMIN; "
            "stop the other listener or give this gateway a log_group of its own"
        )
    else:
        why = text or _errno.errorcode.get(code, str(code))
        reason = f"binding nflog group {group} in {where} failed: {why}"
    return NflogError(code, reason)


class SeqGaps:
    """Events lost, from the gaps in their NFULA_SEQ numbers (mod 2**32)."""

    def __init__(self) -> None:
        # A fresh instance numbers from 0, so events dropped before the first
        # one read are counted too.
        self.next_seq = 0
        self.lost = 0

    def see(self, events: Iterable[LogEvent]) -> None:
        for event in events:
            if event.seq is None:
                continue
            gap = (event.seq - self.next_seq) % _SEQ_SPAN
            if gap < _SEQ_SPAN // 2:  # never backwards: netlink unicast keeps order
                self.lost += gap
            self.next_seq = (event.seq + 1) % _SEQ_SPAN


# --- socket -------------------------------------------------------------------


class NflogSocket:
    """One nflog group, bound in ``netns`` for as long as this object is open.

    ``read()`` waits at most ``wait`` seconds and returns the events that
    arrived (possibly none).  Overruns (ENOBUFS: the kernel dropped events
    because the receive queue was full) are counted in ``overruns`` and the
    events they cost in ``lost``; neither is an error.
    """

    def __init__(
        self,
        group: int,
        *,
        netns: str | None = None,
        copy_range: int = COPY_RANGE,
        rcvbuf: int = DEFAULT_RCVBUF,
        wait: float = DEFAULT_WAIT,
    ) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"nflog group {group} is not 0..65535")
        self.group = group
        self.netns = netns
        self.overruns = 0
        self._gaps = SeqGaps()
        with inside(netns):
            # The socket keeps the namespace it was created in.
            self._nl = NfNetlink(rcvbuf=rcvbuf, recv_buffer=RECV_BUFFER, timeout=wait)
        try:
            self._configure(bind_attrs(copy_range))
        except NetlinkError as error:
            self._nl.close()
            raise bind_error(group, netns, error.errno or 0, error.strerror or "") from None
        except BaseException:
            self._nl.close()
            raise

    def _configure(self, attrs: bytes) -> None:
        """One config request and its ACK (nfnetlink answers inside our send)."""
        seq = self._nl.next_seq()
        self._nl.send(config_message(self.group, seq, attrs))
        while True:
            batch = self._nl.recv()  # TimeoutError if the ACK never comes
            for msg in batch or ():
                if msg.type == NLMSG_ERROR and msg.seq == seq:
                    code, text = decode_error(msg)
                    if code:
                        raise NetlinkError(code, text or _errno.errorcode.get(code, str(code)))
                    return

    def read(self) -> list[LogEvent]:
        """Events that arrived within the wait (a first datagram, then what is queued)."""
        events: list[LogEvent] = []
        for index in range(_DRAIN):
            try:
                batch = self._nl.recv(wait=index == 0)
            except TimeoutError:
                break
            except OSError as error:
                if error.errno == _errno.ENOBUFS:
                    # The kernel dropped a batch; the NFULA_SEQ gap counts it.
                    self.overruns += 1
                    continue
                if error.errno == _errno.EMSGSIZE:
                    continue  # a truncated datagram: its events show as a gap too
                raise
            if batch is None:
                break
            events.extend(decode_datagram(batch))
        self._gaps.see(events)
        return events

    @property
    def lost(self) -> int:
        """Events the kernel dropped (overruns) since the bind."""
        return self._gaps.lost

    def fileno(self) -> int:
        return self._nl.fileno()

    def close(self) -> None:
        # Closing releases the group (the kernel destroys the instance).
        self._nl.close()

    def __enter__(self) -> NflogSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
