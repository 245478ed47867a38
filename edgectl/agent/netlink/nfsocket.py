"""The nfnetlink socket: one per process, in the namespace of the thread that opened it.

A ``NfNetlink`` socket lives in the network namespace of the thread that
created it, for its whole life; it is not thread-safe (one exchange at a
time).  One socket speaks every nfnetlink subsystem (nf_tables, ctnetlink,
nfnetlink_log): the subsystem is in each message's type.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import socket
import struct
from collections.abc import Sequence
from types import TracebackType

from edgectl.agent.netlink.codec import NlMsg, decode_error, encode_message, iter_messages
from edgectl.agent.netlink.constants import (
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_NETFILTER,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NLMSG_OVERRUN,
    SO_RCVBUFFORCE,
    SO_SNDBUFFORCE,
    SOL_NETLINK,
)

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


class NetlinkError(OSError):
    """The kernel answered a request with NLMSG_ERROR (or a dump ended in error).

    ``errno`` is the positive errno; ``strerror`` includes the kernel's
    extended-ack text when it sent one.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)


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
