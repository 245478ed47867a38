"""Read back the live table over raw nfnetlink, without listing set elements.

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

The queries take the table's family and name (``edgectl.agent.table`` names
edgectl's own once); the socket, codec and kernel numbers are the
``edgectl.agent.netlink`` package's.  Only the standard library is used:
this module is the agent's drift probe and must keep working when nothing
else does.
"""

from __future__ import annotations

import errno as _errno
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from edgectl.agent.netlink.codec import (
    NlMsg,
    be32,
    be64,
    cstr,
    nft_attrs,
    nla,
    nla_be32,
    nla_nested,
    nla_str,
    parse_attrs,
)
from edgectl.agent.netlink.constants import (
    NF_ACCEPT,
    NF_DROP,
    NFPROTO_ARP,
    NFPROTO_BRIDGE,
    NFPROTO_INET,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    NFPROTO_NETDEV,
    NFT_MSG_GETCHAIN,
    NFT_MSG_GETGEN,
    NFT_MSG_GETOBJ,
    NFT_MSG_GETRULE,
    NFT_MSG_GETSET,
    NFT_MSG_GETSETELEM,
    NFT_MSG_GETTABLE,
    NFT_MSG_NEWGEN,
    NFT_MSG_NEWSET,
    NFT_OBJECT_COUNTER,
    NFT_SET_ANONYMOUS,
    NFT_SET_INTERVAL,
    NFTA_CHAIN_HOOK,
    NFTA_CHAIN_NAME,
    NFTA_CHAIN_POLICY,
    NFTA_CHAIN_TABLE,
    NFTA_CHAIN_TYPE,
    NFTA_COUNTER_BYTES,
    NFTA_COUNTER_PACKETS,
    NFTA_DATA_VALUE,
    NFTA_GEN_ID,
    NFTA_HOOK_HOOKNUM,
    NFTA_HOOK_PRIORITY,
    NFTA_LIST_ELEM,
    NFTA_OBJ_DATA,
    NFTA_OBJ_NAME,
    NFTA_OBJ_TABLE,
    NFTA_OBJ_TYPE,
    NFTA_RULE_CHAIN,
    NFTA_RULE_HANDLE,
    NFTA_RULE_TABLE,
    NFTA_RULE_USERDATA,
    NFTA_SET_DATA_LEN,
    NFTA_SET_DATA_TYPE,
    NFTA_SET_DESC,
    NFTA_SET_DESC_SIZE,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE,
    NFTA_SET_FLAGS,
    NFTA_SET_KEY_LEN,
    NFTA_SET_KEY_TYPE,
    NFTA_SET_NAME,
    NFTA_SET_TABLE,
    NFTA_SET_TIMEOUT,
    NFTA_SET_USERDATA,
    NFTA_TABLE_NAME,
    NFTNL_UDATA_RULE_COMMENT,
)
from edgectl.agent.netlink.nfsocket import NetlinkError, NfNetlink

# Lookups per send(): the kernel answers each one before send() returns, so
# the replies of a whole window sit in our receive queue at once.
DEFAULT_WINDOW = 256

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
    counters = read_counters(sock, family, table)
    return TableLayout(chains=chains, sets=sets, counters=counters, generation=0)


def read_counters(sock: NfNetlink, family: int, table: str) -> dict[str, tuple[int, int]]:
    """The table's named counters, (packets, bytes) by name, from one GETOBJ dump.

    NetlinkError(ENOENT) if the table does not exist.
    """
    counters: dict[str, tuple[int, int]] = {}
    obj_filter = nla_str(NFTA_OBJ_TABLE, table) + nla_be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER)
    for m in sock.dump(NFT_MSG_GETOBJ, family, obj_filter):
        owner, name, obj_type, data = decode_obj(m)
        if owner == table and obj_type == NFT_OBJECT_COUNTER:
            counters[name] = decode_counter(data)
    return counters


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
