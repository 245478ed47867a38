"""RADIUS accounting on the wire: pyrad enters edgectl here and nowhere else.

pyrad decodes and encodes; which packets the feed trusts (the clients file,
RFC 2866's Request Authenticator) and what they mean (``events``) are ours.
The dictionary is the one shipped in this package (``dictionary.radius``).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from importlib import resources
from typing import Any

from pyrad import packet as pyrad_packet
from pyrad import tools as pyrad_tools
from pyrad.dictionary import Dictionary

from edgectl.controller.radius.events import Accounting, AttributeKey

ACCOUNTING_REQUEST = pyrad_packet.AccountingRequest
ACCOUNTING_RESPONSE = pyrad_packet.AccountingResponse


class Dropped(Exception):
    """A datagram the feed must not answer; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def dictionary() -> Any:
    """The shipped dictionary, parsed (a few ms: build it once per server, not at import)."""
    with resources.files(__package__).joinpath("dictionary.radius").open("r") as file:
        return Dictionary(file)


# pyrad raises these for values it cannot decode (an ipaddr of 3 octets, a
# truncated vendor attribute, a string that is not a string).
_DECODE_ERRORS = (
    pyrad_packet.PacketError,
    ValueError,
    struct.error,
    KeyError,
    IndexError,
    TypeError,
    UnicodeError,
)


def _one(packet: Any, words: Any, name: str) -> Any:
    """The single value of ``name`` or None; twice is malformed (RFC 2865 5.44 tables).

    Read from the raw values pyrad split the packet into, and decoded by
    pyrad's own type codec: going through ``name in packet`` and
    ``packet[name]`` resolved the name twice and was half of decoding a packet.
    None of the feed's attributes is tagged, encrypted or a TLV.
    """
    attr = words.attributes[name]
    key = (words.vendors.GetForward(attr.vendor), attr.code) if attr.vendor else attr.code
    values = OrderedDict.get(packet, key)
    if values is None:
        return None
    if len(values) != 1:
        raise Dropped("malformed", f"{name} appears {len(values)} times")
    return pyrad_tools.DecodeAttr(attr.type, values[0])


def decode(datagram: bytes, secret: bytes, account_key: AttributeKey, words: Any) -> Accounting:
    """An Accounting-Request from a known client, checked and read; else ``Dropped``.

    ``words`` is ``dictionary()``.  The Request Authenticator is checked before
    any attribute is read: a packet from someone without the secret must cost
    as little as possible and reveal nothing.
    """
    try:
        request = pyrad_packet.AcctPacket(packet=datagram, secret=secret, dict=words)
    except _DECODE_ERRORS as error:
        raise Dropped("malformed", str(error)) from None
    if request.code != ACCOUNTING_REQUEST:
        raise Dropped("not_accounting", f"code {request.code}")
    if not request.VerifyAcctRequest():
        raise Dropped("bad_authenticator")
    try:
        status_type = _one(request, words, "Acct-Status-Type")
        if status_type is None:
            raise Dropped("malformed", "no Acct-Status-Type")
        session_id = _one(request, words, "Acct-Session-Id")
        if isinstance(session_id, bytes):
            # Not UTF-8: keep it, as hex, so Start and Stop still match.
            session_id = "0x" + session_id.hex()
        raw_account = request.get(account_key)
        account = raw_account[0] if raw_account else None
        reply = request.CreateReply()
        reply.code = ACCOUNTING_RESPONSE
        return Accounting(
            identifier=request.id,
            authenticator=request.authenticator,
            status_type=int(status_type),
            session_id=session_id,
            account=account if isinstance(account, bytes) else None,
            framed_ip=_one(request, words, "Framed-IP-Address"),
            delegated_prefix=_one(request, words, "Delegated-IPv6-Prefix"),
            framed_prefix=_one(request, words, "Framed-IPv6-Prefix"),
            event_timestamp=_one(request, words, "Event-Timestamp"),
            delay=_one(request, words, "Acct-Delay-Time"),
            session_time=_one(request, words, "Acct-Session-Time"),
            reply=reply.ReplyPacket(),
        )
    except _DECODE_ERRORS as error:
        raise Dropped("malformed", str(error)) from None


def encode_request(
    secret: bytes,
    identifier: int,
    attributes: dict[str, Any],
    words: Any,
    raw: dict[AttributeKey, bytes] | None = None,
) -> bytes:
    """An Accounting-Request as a NAS sends it (tests, the bench and the lab's BNG).

    ``attributes`` by dictionary name (``{"Acct-Status-Type": "Start", ...}``);
    ``raw`` for attributes the dictionary does not name (a vendor's).
    """
    request = pyrad_packet.AcctPacket(id=identifier, secret=secret, dict=words)
    for name, value in attributes.items():
        request[name] = value
    for key, value in (raw or {}).items():
        request[key] = [value]
    data: bytes = request.RequestPacket()
    return data


def is_response_to(datagram: bytes, request: bytes, secret: bytes) -> bool:
    """True if ``datagram`` is a valid Accounting-Response to ``request`` (senders' check)."""
    try:
        sent = pyrad_packet.AcctPacket(packet=request, secret=secret)
        reply = pyrad_packet.AcctPacket(packet=datagram, secret=secret)
    except _DECODE_ERRORS:
        return False
    return reply.code == ACCOUNTING_RESPONSE and bool(sent.VerifyReply(reply, datagram))
