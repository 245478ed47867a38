"""Element adds and deletes as one nf_tables batch over raw nfnetlink.

Why not libnftables for a delta: before any ``add element`` nft 1.0.6
refreshes its cache with the elements of every interval set in the
namespace, in any table (NFT_CACHE_SETELEM_MAYBE).  With edgectl's 5,000
pool prefixes one quarantine then costs ~10 ms; with another tool's 20k
interval elements, 83 ms.  The same operations sent as one batch cost
~0.03 ms and stay one transaction: the kernel applies the whole batch or
none of it.  Structure and interval-set changes still go through
libnftables, whose parser and interval handling we do not reimplement.

The keys of a table restored in two steps (``Dataplane.full_sync`` onto no
table) go this way too, packed straight from the state (``pack_keys``):
nft's parser costs ~1.4 us a key of a 200k-key script, a packed element
~0.3 us, and the text need not be written first.
"""

from __future__ import annotations

import math
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import compress, repeat
from operator import is_, not_
from typing import Any, NamedTuple

from edgectl.agent import table
from edgectl.agent.keys import EXEMPT, KeyLayout, Kind
from edgectl.agent.netlink.codec import (
    decode_error,
    encode_batch_marker,
    encode_message,
    nla,
    nla_nested,
    nla_str,
)
from edgectl.agent.netlink.constants import (
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWSETELEM,
    NFTA_DATA_VALUE,
    NFTA_LIST_ELEM,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE,
    NFTA_SET_ELEM_TIMEOUT,
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
)
from edgectl.agent.netlink.nfsocket import NetlinkError, NfNetlink
from edgectl.agent.transaction import ElementOp
from edgectl.model.policy import DesiredState
from edgectl.model.serial import StateColumns

ACK_TIMEOUT_S = 5.0
# After the kernel refused a batch, how long to wait for the other answers.
ERROR_GRACE_S = 0.2


def _key(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def _element(text: str, timeout: int | None) -> bytes:
    attrs = nla_nested(NFTA_SET_ELEM_KEY, nla(NFTA_DATA_VALUE, _key(text)))
    if timeout is not None:
        attrs += nla(NFTA_SET_ELEM_TIMEOUT, struct.pack(">Q", timeout * 1000))
    return nla_nested(NFTA_LIST_ELEM, attrs)


# An attribute's length is 16 bits: one message's element list must stay
# under 64 KiB, ~40 bytes an element with a timeout.
ELEMENTS_PER_MESSAGE = 1024


def split(ops: Sequence[ElementOp]) -> list[ElementOp]:
    """The same operations, in order, none carrying more than ELEMENTS_PER_MESSAGE."""
    return [
        ElementOp(op.verb, op.set_name, op.elements[start : start + ELEMENTS_PER_MESSAGE])
        for op in ops
        for start in range(0, len(op.elements), ELEMENTS_PER_MESSAGE)
    ]


# (verb, set name, the elements' encoded NFTA_LIST_ELEM attributes): one message.
Message = tuple[str, str, bytes]


def _batch(messages: Sequence[Message], seqs: Sequence[int], table_name: str) -> bytes:
    """BATCH_BEGIN, one NEW/DELSETELEM message each, BATCH_END; ``seqs`` gives
    len(messages) + 2 sequence numbers (begin, messages..., end)."""
    parts = [encode_batch_marker(NFNL_MSG_BATCH_BEGIN, seqs[0])]
    for (verb, set_name, elements), seq in zip(messages, seqs[1:-1], strict=True):
        if verb == "add":
            msg, flags = NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
        elif verb == "delete":
            msg, flags = NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK
        else:
            raise ValueError(f"unknown element verb {verb!r}")
        attrs = (
            nla_str(NFTA_SET_ELEM_LIST_TABLE, table_name)
            + nla_str(NFTA_SET_ELEM_LIST_SET, set_name)
            + nla_nested(NFTA_SET_ELEM_LIST_ELEMENTS, elements)
        )
        parts.append(encode_message(msg, flags, seq, table.NFPROTO, attrs))
    parts.append(encode_batch_marker(NFNL_MSG_BATCH_END, seqs[-1]))
    return b"".join(parts)


def encode_batch(
    ops: Sequence[ElementOp], seqs: Sequence[int], table_name: str = table.NAME
) -> bytes:
    """BATCH_BEGIN, one NEW/DELSETELEM message per op, BATCH_END.

    ``ops`` must already be ``split``; ``seqs`` gives len(ops) + 2 sequence
    numbers (begin, ops..., end).
    """
    messages = [
        (op.verb, op.set_name, b"".join(_element(text, t) for text, t in op.elements)) for op in ops
    ]
    return _batch(messages, seqs, table_name)


def commit_elements(sock: NfNetlink, ops: Sequence[ElementOp]) -> None:
    """Commit ``ops`` as one transaction; NetlinkError if the kernel refused it.

    Every message asks for an ACK, so we know the batch was committed (or
    why not) before returning; a refused batch leaves the kernel unchanged.
    """
    ops = split([op for op in ops if op.elements])
    if ops:
        _commit(sock, len(ops), lambda seqs: encode_batch(ops, seqs))


def commit_packed(sock: NfNetlink, packed: Mapping[str, Sequence[bytes]]) -> int:
    """``add`` every set's packed elements (``pack_keys``) as one transaction; the
    bytes sent.  NetlinkError if the kernel refused it (then nothing was added)."""
    messages: list[Message] = [
        ("add", name, b"".join(elements[start : start + ELEMENTS_PER_MESSAGE]))
        for name, elements in packed.items()
        for start in range(0, len(elements), ELEMENTS_PER_MESSAGE)
    ]
    if not messages:
        return 0
    return _commit(sock, len(messages), lambda seqs: _batch(messages, seqs, table.NAME))


def _commit(sock: NfNetlink, count: int, encode: Callable[[list[int]], bytes]) -> int:
    """Send the batch of ``count`` messages ``encode`` builds; wait for every ACK."""
    seqs = [sock.next_seq() for _ in range(count + 2)]
    pending = set(seqs[1:-1])
    batch = encode(seqs)
    # The kernel takes a batch from one datagram, so the send buffer must
    # hold it whole (libnftables raises it the same way).
    sock.ensure_sndbuf(len(batch))
    sock.send(batch)
    deadline = time.monotonic() + ACK_TIMEOUT_S
    refusal: NetlinkError | None = None
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([sock.fileno()], [], [], remaining)[0]:
            break
        for message in sock.recv(wait=False) or ():
            if message.type != NLMSG_ERROR or message.seq not in pending:
                continue  # a late answer to something else
            pending.discard(message.seq)
            code, text = decode_error(message)
            if code and refusal is None:
                refusal = NetlinkError(code, text or "element batch refused")
                deadline = min(deadline, time.monotonic() + ERROR_GRACE_S)
    if refusal is not None:
        raise refusal
    if pending:
        raise TimeoutError(f"no answer from the kernel for {len(pending)} element message(s)")
    return len(batch)


def _element_header(key_size: int, timeout: bool) -> bytes:
    """An NFTA_LIST_ELEM's bytes up to its key's value (sizes are multiples of 4: no padding)."""
    value = _NLA.pack(4 + key_size, NFTA_DATA_VALUE)
    key = _NLA.pack(8 + key_size, NFTA_SET_ELEM_KEY | NLA_F_NESTED)
    size = 12 + key_size + (12 if timeout else 0)
    return _NLA.pack(size, NFTA_LIST_ELEM | NLA_F_NESTED) + key + value


_NLA = struct.Struct("=HH")  # an attribute header: length, type (host order)
_V4, _V4_T = _element_header(4, False), _element_header(4, True)
_V6, _V6_T = _element_header(16, False), _element_header(16, True)
_TIMEOUT = _NLA.pack(12, NFTA_SET_ELEM_TIMEOUT)
_new_tuple = tuple.__new__


def pack_keys(state: DesiredState, now: datetime) -> dict[str, list[bytes]]:
    """Every exact key of ``state`` as an encoded set element, by set name.

    The binary twin of ``render_keys`` (tests/test_render.py holds them
    equal): the same sets, keys and timeouts, expired entries left out,
    keys that are not exact left to the structure's interval maps.
    """
    return _packed(state, state.quarantines.items(), state.exemptions.items(), now)


def _packed(
    structure: DesiredState,
    quarantines: Iterable[tuple[Any, Any]],
    exemptions: Iterable[tuple[Any, Any]],
    now: datetime,
) -> dict[str, list[bytes]]:
    names = KeyLayout(structure.delegated_lengths()).exact_names()
    packed: dict[str, list[bytes]] = {name: [] for name in names.values()}
    _pack(quarantines, None, now, names, packed)
    _pack(exemptions, EXEMPT, now, names, packed)
    return {name: elements for name, elements in packed.items() if elements}


def _pack(
    entries: Iterable[tuple[Any, Any]],
    kind: Kind | None,
    now: datetime,
    names: Mapping[tuple[Kind, int, int], str],
    packed: dict[str, list[bytes]],
) -> None:
    """The hot loop: a few C calls a key, no per-key object but its bytes.

    IPv4 host keys, nearly all of them, take the short way: their set by
    kind alone, appended through a bound method.
    """
    ceil = math.ceil
    hosts4 = {
        k: packed[name].append for (k, version, length), name in names.items() if version == 4
    }
    for key, entry in entries:
        version, value, length = key
        held = entry.mode if kind is None else kind
        expires = entry.expires
        if version == 4 and length == 32:
            if expires is None:
                hosts4[held](_V4 + value.to_bytes(4, "big"))
                continue
            milliseconds = ceil((expires - now).total_seconds()) * 1000
            if milliseconds > 0:  # else expired: the kernel would time it out at once
                timeout = _TIMEOUT + milliseconds.to_bytes(8, "big")
                hosts4[held](_V4_T + value.to_bytes(4, "big") + timeout)
            continue
        name = names.get((held, version, length))
        if name is None:
            continue  # not exact: an interval map element, written with the structure
        size = 4 if version == 4 else 16
        if expires is None:
            element = (_V4 if size == 4 else _V6) + value.to_bytes(size, "big")
        else:
            milliseconds = ceil((expires - now).total_seconds()) * 1000
            if milliseconds <= 0:
                continue
            timeout = _TIMEOUT + milliseconds.to_bytes(8, "big")
            element = (_V4_T if size == 4 else _V6_T) + value.to_bytes(size, "big") + timeout
        packed[name].append(element)


class _Held(NamedTuple):
    """What ``_pack`` reads of an entry, for a key of the columns (made by
    tuple.__new__: NamedTuple's own __new__ is a Python call)."""

    mode: Kind
    expires: datetime | None


def pack_columns(columns: StateColumns, now: datetime) -> dict[str, list[bytes]]:
    """``pack_keys`` of ``columns.state()``, from its key columns: no entry built
    (tests/test_cold_start.py and tests/test_apply_exact.py hold the two equal,
    as sets: the order differs).  Keys that are not exact are left to the
    structure's interval maps, as ``pack_keys`` leaves them.

    A cold start and ``edgectl apply -f`` write the kernel with these before
    (or without) building the model.
    """
    names = KeyLayout(columns.structure.delegated_lengths()).exact_names()
    packed: dict[str, list[bytes]] = {name: [] for name in names.values()}
    for keys, kind in ((columns.quarantines, None), (columns.exemptions, EXEMPT)):
        if kind is None:
            kinds4, kinds = keys.split("mode")
        else:
            kinds4, kinds = [kind] * len(keys.v4), [kind] * len(keys.others)
        expires4, expires = keys.split("expires")
        for held, four, timed in _by_kind(keys.v4, kinds4, expires4):
            _pack_v4(four, timed, packed[names[held, 4, 32]], now)
        if keys.others:  # few: IPv6 keys, IPv4 prefixes
            entries = map(_new_tuple, repeat(_Held), zip(kinds, expires, strict=True))
            _pack(zip(keys.others, entries, strict=True), kind, now, names, packed)
    return {name: elements for name, elements in packed.items() if elements}


def _by_kind(
    keys: list[bytes], kinds: Sequence[Kind], expires: list[datetime | None]
) -> list[tuple[Kind, list[bytes], list[datetime | None]]]:
    """The keys and expiries of each kind: one C pass a kind (there are four)."""
    present = set(kinds)
    if len(present) <= 1:
        return [(kind, keys, expires) for kind in present]
    split = []
    for kind in present:
        chosen = list(map(is_, kinds, repeat(kind)))
        split.append((kind, list(compress(keys, chosen)), list(compress(expires, chosen))))
    return split


def _pack_v4(
    keys: list[bytes], expires: list[datetime | None], out: list[bytes], now: datetime
) -> None:
    """IPv4 addresses of one set: those that never expire in one C pass (most of
    them), the timed ones in a loop."""
    never = list(map(is_, expires, repeat(None)))
    out.extend(map(_V4.__add__, compress(keys, never)))
    if all(never):
        return
    timed = list(map(not_, never))
    ceil = math.ceil
    for key, expiry in zip(compress(keys, timed), compress(expires, timed), strict=True):
        assert expiry is not None
        milliseconds = ceil((expiry - now).total_seconds()) * 1000
        if milliseconds > 0:  # else expired: the kernel would time it out at once
            out.append(_V4_T + key + _TIMEOUT + milliseconds.to_bytes(8, "big"))
