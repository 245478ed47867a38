"""kernel_readback's wire codec against hand-made nfnetlink bytes (no root, no kernel).

The byte strings are built here with plain ``struct`` (or written out in hex)
from the layouts in <linux/netlink.h> and <linux/netfilter/nf_tables.h>, not
with the module's own encoder, so a mistake in the module cannot cancel out.
"""

from __future__ import annotations

import errno
import struct

import pytest

from edgectl.agent import kernel_readback as kr
from edgectl.agent.netlink.codec import (
    NlMsg,
    decode_error,
    encode_message,
    iter_attrs,
    iter_messages,
    parse_attrs,
)
from edgectl.agent.netlink.constants import (
    NF_DROP,
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NFPROTO_NETDEV,
    NFT_MSG_GETCHAIN,
    NFT_MSG_GETGEN,
    NFT_MSG_GETSET,
    NFT_MSG_GETSETELEM,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWGEN,
    NFT_MSG_NEWOBJ,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM,
    NFT_OBJECT_COUNTER,
    NFT_SET_EVAL,
    NFT_SET_MAP,
    NFT_SET_TIMEOUT,
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGERR_ATTR_MSG,
)
from edgectl.agent.netlink.nfsocket import NetlinkError, NfNetlink

NFT = NFNL_SUBSYS_NFTABLES << 8


def attr(attr_type: int, payload: bytes) -> bytes:
    """struct nlattr (host-order len/type) + payload + padding to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * (-length % 4)


def nested(attr_type: int, *children: bytes) -> bytes:
    return attr(attr_type | 0x8000, b"".join(children))


def string(attr_type: int, text: str) -> bytes:
    return attr(attr_type, text.encode() + b"\0")


def be32(attr_type: int, value: int) -> bytes:
    return attr(attr_type, struct.pack(">I", value))


def be64(attr_type: int, value: int) -> bytes:
    return attr(attr_type, struct.pack(">Q", value))


def nft_msg(msg: int, body: bytes, *, family: int = 1, flags: int = 2, seq: int = 7) -> NlMsg:
    """An nf_tables message as the kernel sends it, parsed only by iter_messages."""
    payload = struct.pack("=BBH", family, 0, 0) + body
    raw = struct.pack("=IHHII", 16 + len(payload), NFT | msg, flags, seq, 4242) + payload
    (m,) = iter_messages(raw)
    return m


# --- encoding ---------------------------------------------------------------


def test_getgen_request_bytes() -> None:
    raw = encode_message(NFT_MSG_GETGEN, NLM_F_REQUEST | NLM_F_ACK, 0x01020304, 0, b"")
    # len=20, type=0x0a10 (subsys 10, msg 16), flags=5, seq, pid=0 | nfgenmsg 0,0,0
    assert raw == struct.pack("=IHHII", 20, 0x0A10, 5, 0x01020304, 0) + b"\0\0\0\0"


def test_getsetelem_attrs_one_ipv4_key() -> None:
    got = kr.getsetelem_attrs("edgectl", "quar4", bytes([10, 0, 0, 1]))
    expected = (
        "0c00 0100 6564676563746c00"  # NFTA_SET_ELEM_LIST_TABLE "edgectl\0"
        "0a00 0200 717561723400 0000"  # NFTA_SET_ELEM_LIST_SET "quar4\0" + 2 bytes padding
        "1400 0380"  # NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED
        "1000 0180"  # NFTA_LIST_ELEM | NLA_F_NESTED
        "0c00 0180"  # NFTA_SET_ELEM_KEY | NLA_F_NESTED
        "0800 0100 0a000001"  # NFTA_DATA_VALUE = 10.0.0.1
    )
    assert got == bytes.fromhex(expected.replace(" ", ""))
    assert got == (
        string(1, "edgectl")
        + string(2, "quar4")
        + nested(3, nested(1, nested(1, attr(1, bytes([10, 0, 0, 1])))))
    )


def test_getsetelem_attrs_ipv6_key_is_16_bytes_verbatim() -> None:
    key = kr.encode_ipv6("2001:db8:0:1::")
    got = kr.getsetelem_attrs("t", "s", key)
    assert got.endswith(attr(1, key))
    assert len(key) == 16


def test_encode_addresses_network_order() -> None:
    assert kr.encode_ipv4("192.0.2.1") == b"\xc0\x00\x02\x01"
    assert kr.encode_ipv6("2001:db8::1") == bytes.fromhex("20010db8000000000000000000000001")
    with pytest.raises(OSError):
        kr.encode_ipv4("2001:db8::1")


# --- attributes and messages --------------------------------------------------


def test_iter_attrs_masks_nested_and_byteorder_flags_and_skips_padding() -> None:
    buf = attr(1 | 0x8000, b"abc") + attr(2 | 0x4000, b"\x00\x00\x00\x05") + attr(3, b"")
    assert list(iter_attrs(buf)) == [(1, b"abc"), (2, b"\0\0\0\5"), (3, b"")]


def test_parse_attrs_last_duplicate_wins() -> None:
    assert parse_attrs(attr(1, b"a") + attr(1, b"b")) == {1: b"b"}


@pytest.mark.parametrize(
    "buf",
    [
        struct.pack("=HH", 3, 1),  # length below the header size
        struct.pack("=HH", 12, 1) + b"abcd",  # length past the buffer
    ],
)
def test_iter_attrs_rejects_malformed(buf: bytes) -> None:
    with pytest.raises(ValueError):
        list(iter_attrs(buf))


def test_iter_messages_splits_a_datagram_with_padding() -> None:
    one = struct.pack("=IHHII", 19, NFT | 15, 0, 1, 0) + b"xyz"  # 19 bytes, padded to 20
    two = struct.pack("=IHHII", 20, NLMSG_DONE, 2, 2, 0) + b"\0\0\0\0"
    msgs = list(iter_messages(one + b"\0" + two))
    assert [(m.type, m.seq, m.payload) for m in msgs] == [
        (NFT | 15, 1, b"xyz"),
        (NLMSG_DONE, 2, b"\0\0\0\0"),
    ]


def test_iter_messages_rejects_overlong_length() -> None:
    with pytest.raises(ValueError):
        list(iter_messages(struct.pack("=IHHII", 64, 2, 0, 0, 0)))


# --- NLMSG_ERROR --------------------------------------------------------------


def _error(code: int, flags: int, echoed: bytes, tlvs: bytes = b"") -> NlMsg:
    payload = struct.pack("=i", code) + echoed + tlvs
    raw = struct.pack("=IHHII", 16 + len(payload), NLMSG_ERROR, flags, 9, 0) + payload
    (m,) = iter_messages(raw)
    return m


def test_decode_error_ack_is_zero() -> None:
    orig = struct.pack("=IHHII", 16, NFT | 16, 5, 9, 0)
    assert decode_error(_error(0, NLM_F_CAPPED, orig)) == (0, "")


def test_decode_error_capped_with_ext_ack_message() -> None:
    orig = struct.pack("=IHHII", 60, NFT | 13, 5, 9, 0)  # header only (NETLINK_CAP_ACK)
    msg = _error(
        -errno.ENOENT,
        NLM_F_CAPPED | NLM_F_ACK_TLVS,
        orig,
        string(NLMSGERR_ATTR_MSG, "no such set") + attr(2, struct.pack("=I", 20)),
    )
    assert decode_error(msg) == (errno.ENOENT, "no such set")


def test_decode_error_uncapped_skips_the_echoed_request_payload() -> None:
    orig_payload = b"\1\0\0\0" + string(1, "edgectl")  # 16 bytes
    orig = struct.pack("=IHHII", 16 + len(orig_payload), NFT | 1, 5, 9, 0) + orig_payload
    msg = _error(-errno.EINVAL, NLM_F_ACK_TLVS, orig, string(NLMSGERR_ATTR_MSG, "bad"))
    assert decode_error(msg) == (errno.EINVAL, "bad")


# --- rule userdata ------------------------------------------------------------


def test_rule_comment_alone() -> None:
    assert kr.decode_rule_comment(b"\x00\x03r1\x00") == "r1"


def test_rule_comment_after_another_tlv() -> None:
    # type 1 = NFTNL_UDATA_RULE_EBTABLES_POLICY (4 bytes), then the comment.
    assert kr.decode_rule_comment(b"\x01\x04\x00\x00\x00\x01\x00\x06op25b\x00") == "op25b"


def test_rule_without_comment() -> None:
    assert kr.decode_rule_comment(b"\x01\x04\x00\x00\x00\x01") is None
    assert kr.decode_rule_comment(b"") is None


def test_rule_comment_truncated_tlv() -> None:
    with pytest.raises(ValueError):
        kr.decode_rule_comment(b"\x00\x09abc")


# --- objects ------------------------------------------------------------------


def test_decode_base_chain() -> None:
    m = nft_msg(
        NFT_MSG_NEWCHAIN,
        string(1, "edgectl")
        + be64(2, 1)
        + string(3, "forward")
        + nested(4, be32(1, 2), attr(2, struct.pack(">i", -150)))
        + be32(5, NF_DROP)
        + be32(6, 3)
        + string(7, "filter"),
    )
    table, chain = kr.decode_chain(m, NFPROTO_INET)
    assert table == "edgectl"
    assert chain == kr.ChainInfo("forward", "forward", -150, "drop", "filter", [])


def test_decode_regular_chain_has_no_hook_fields() -> None:
    m = nft_msg(NFT_MSG_NEWCHAIN, string(1, "edgectl") + be64(2, 4) + string(3, "mail"))
    assert kr.decode_chain(m, NFPROTO_INET) == (
        "edgectl",
        kr.ChainInfo("mail", None, None, None, None, []),
    )


def test_hook_names_depend_on_family() -> None:
    assert kr.hook_name(NFPROTO_INET, 2) == "forward"
    assert kr.hook_name(NFPROTO_NETDEV, 0) == "ingress"
    assert kr.hook_name(NFPROTO_INET, 42) == "hook42"


def test_decode_rule_with_comment() -> None:
    m = nft_msg(
        NFT_MSG_NEWRULE,
        string(1, "edgectl")
        + string(2, "forward")
        + be64(3, 0x1_0000_0009)
        + nested(4, b"")
        + attr(7, b"\x00\x03r1\x00"),
    )
    assert kr.decode_rule(m) == ("edgectl", "forward", kr.RuleInfo(0x1_0000_0009, "r1"))


def test_decode_set_with_desc_size_and_timeout() -> None:
    m = nft_msg(
        NFT_MSG_NEWSET,
        string(1, "edgectl")
        + string(2, "meter4")
        + be32(3, NFT_SET_TIMEOUT | NFT_SET_EVAL)
        + be32(4, 7)
        + be32(5, 4)
        + nested(9, be32(1, 65536))
        + be64(11, 120_000)
        + attr(13, b"\x00\x04\x02\x00\x00\x00"),
    )
    assert kr.decode_set(m) == (
        "edgectl",
        kr.SetInfo(
            name="meter4",
            key_type=7,
            key_len=4,
            flags=0x30,
            data_type=None,
            data_len=None,
            size=65536,
            timeout_ms=120_000,
            userdata=b"\x00\x04\x02\x00\x00\x00",
        ),
    )


def test_decode_map_set_data_fields() -> None:
    m = nft_msg(
        NFT_MSG_NEWSET,
        string(1, "t")
        + string(2, "m")
        + be32(3, NFT_SET_MAP)
        + be32(4, 8)
        + be32(5, 16)
        + be32(6, 0xFFFFFF00)
        + be32(7, 16),
    )
    _, info = kr.decode_set(m)
    assert (info.data_type, info.data_len, info.size, info.timeout_ms, info.userdata) == (
        0xFFFFFF00,
        16,
        None,
        None,
        None,
    )


def test_decode_counter_object() -> None:
    m = nft_msg(
        NFT_MSG_NEWOBJ,
        string(1, "edgectl")
        + string(2, "quarantined")
        + be32(3, NFT_OBJECT_COUNTER)
        + nested(4, be64(1, 300), be64(2, 5)),
    )
    table, name, obj_type, data = kr.decode_obj(m)
    assert (table, name, obj_type) == ("edgectl", "quarantined", NFT_OBJECT_COUNTER)
    assert kr.decode_counter(data) == (5, 300)  # (packets, bytes)


def test_decode_gen() -> None:
    m = nft_msg(NFT_MSG_NEWGEN, be32(1, 0xDEADBEEF) + be32(2, 123) + string(3, "nft"))
    assert kr.decode_gen(m) == 0xDEADBEEF


def test_netlink_error_is_an_oserror_with_errno() -> None:
    exc = NetlinkError(errno.ENOENT, "no such table")
    assert isinstance(exc, OSError)
    assert exc.errno == errno.ENOENT
    assert exc.strerror == "no such table"


# --- pipeline bookkeeping (a fake socket; no kernel) -----------------------------


class _FakeSock:
    """Replays canned recv results; ``None`` stands for EAGAIN, an int for that errno."""

    def __init__(self, script: list[bytes | int | None]) -> None:
        self.script = script
        self.sent: list[bytes] = []
        self.timeout: float | None = 10.0

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, value: float | None) -> None:
        self.timeout = value

    def recv_into(self, buf: memoryview, nbytes: int, flags: int) -> int:
        item = self.script.pop(0)
        if item is None:
            raise BlockingIOError(errno.EAGAIN, "empty")
        if isinstance(item, int):
            raise OSError(item, "scripted")
        buf[: len(item)] = item
        return len(item)


def _ack(seq: int, code: int = 0) -> bytes:
    payload = struct.pack("=i", -code) + struct.pack("=IHHII", 16, NFT | 13, 5, seq, 0)
    return struct.pack("=IHHII", 16 + len(payload), NLMSG_ERROR, NLM_F_CAPPED, seq, 0) + (payload)


def _elem_reply(seq: int) -> bytes:
    payload = b"\1\0\0\0" + string(1, "edgectl")
    return struct.pack("=IHHII", 16 + len(payload), NFT | NFT_MSG_NEWSETELEM, 0, seq, 0) + (payload)


def _with_fake(script: list[bytes | int | None]) -> tuple[NfNetlink, _FakeSock]:
    sock = NfNetlink()
    sock._sock.close()
    fake = _FakeSock(script)
    sock._sock = fake  # type: ignore[assignment]
    sock._seq = 100
    return sock, fake


def test_pipeline_matches_answers_by_seq_and_ignores_strangers() -> None:
    sock, fake = _with_fake([])
    fake.script = [
        _ack(5) + _elem_reply(101),  # seq 5: stale reply from an abandoned exchange
        _ack(101) + _ack(102, errno.ENOENT),
    ]
    out = sock.pipeline([(NFT_MSG_GETSETELEM, 1, b"")] * 2)
    assert [(a[0], len(a[2])) if a else None for a in out] == [(0, 1), (errno.ENOENT, 0)]
    (datagram,) = fake.sent
    assert [m.seq for m in iter_messages(datagram)] == [101, 102]


def test_pipeline_marks_dropped_answers_after_enobufs_instead_of_waiting() -> None:
    # ENOBUFS first, then what did fit, then an empty queue: request 3 was dropped.
    sock, _ = _with_fake([errno.ENOBUFS, _ack(101), _ack(102, errno.ENOENT), None])
    out = sock.pipeline([(NFT_MSG_GETSETELEM, 1, b"")] * 3)
    assert out[0] is not None and out[0][0] == 0
    assert out[1] is not None and out[1][0] == errno.ENOENT
    assert out[2] is None


def _done(seq: int, code: int = 0, flags: int = NLM_F_MULTI) -> bytes:
    return struct.pack("=IHHII", 20, NLMSG_DONE, flags, seq, 0) + struct.pack("=i", -code)


def _chain(seq: int, name: str, flags: int = NLM_F_MULTI) -> bytes:
    payload = b"\1\0\0\0" + string(1, "edgectl") + string(3, name)
    return struct.pack("=IHHII", 16 + len(payload), NFT | NFT_MSG_NEWCHAIN, flags, seq, 0) + (
        payload
    )


def test_dump_collects_until_done() -> None:
    sock, fake = _with_fake([_chain(101, "a") + _chain(101, "b"), _done(101)])
    got = sock.dump(NFT_MSG_GETCHAIN, NFPROTO_INET)
    assert [kr.decode_chain(m, NFPROTO_INET)[1].name for m in got] == ["a", "b"]
    (request,) = iter_messages(fake.sent[0])
    assert request.flags == NLM_F_REQUEST | NLM_F_DUMP


def test_dump_interrupted_by_a_commit_raises_eintr() -> None:
    flags = NLM_F_MULTI | NLM_F_DUMP_INTR
    sock, _ = _with_fake([_chain(101, "a"), _chain(101, "b", flags), _done(101, 0, flags)])
    with pytest.raises(NetlinkError) as info:
        sock.dump(NFT_MSG_GETCHAIN, NFPROTO_INET)
    assert info.value.errno == errno.EINTR


def test_dump_ending_in_error_raises_it() -> None:
    sock, _ = _with_fake([_done(101, errno.EPERM)])
    with pytest.raises(NetlinkError) as info:
        sock.dump(NFT_MSG_GETSET, NFPROTO_INET)
    assert info.value.errno == errno.EPERM


def _empty_layout() -> kr.TableLayout:
    return kr.TableLayout(chains={}, sets={}, counters={}, generation=0)


def test_read_table_retries_until_the_generation_holds_still(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # before/after pairs: (1, 2) a commit landed mid-read; (2, 2) consistent.
    gens = iter([1, 2, 2, 2])
    reads: list[int] = []

    def once(sock: NfNetlink, family: int, table: str) -> kr.TableLayout:
        reads.append(1)
        return _empty_layout()

    monkeypatch.setattr(kr, "generation", lambda sock: next(gens))
    monkeypatch.setattr(kr, "_read_table_once", once)
    layout = kr.read_table(None, NFPROTO_INET, "edgectl")  # type: ignore[arg-type]
    assert layout is not None and layout.generation == 2
    assert len(reads) == 2


def test_read_table_gives_up_on_a_ruleset_that_never_holds_still(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = iter(range(100))
    monkeypatch.setattr(kr, "generation", lambda sock: next(counter))
    monkeypatch.setattr(kr, "_read_table_once", lambda sock, family, table: _empty_layout())
    with pytest.raises(NetlinkError) as info:
        kr.read_table(None, NFPROTO_INET, "edgectl", attempts=3)  # type: ignore[arg-type]
    assert info.value.errno == errno.EAGAIN


def test_read_table_retries_an_interrupted_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: list[NetlinkError | None] = [NetlinkError(errno.EINTR, "intr"), None]

    def once(sock: NfNetlink, family: int, table: str) -> kr.TableLayout:
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure
        return _empty_layout()

    monkeypatch.setattr(kr, "generation", lambda sock: 7)
    monkeypatch.setattr(kr, "_read_table_once", once)
    layout = kr.read_table(None, NFPROTO_INET, "edgectl")  # type: ignore[arg-type]
    assert layout is not None and layout.generation == 7
