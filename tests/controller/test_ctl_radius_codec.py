"""The RADIUS codec and what a packet means: unit tier, no sockets."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgectl.controller.radius import codec
from edgectl.controller.radius.events import (
    CLASS,
    USER_NAME,
    AccountRule,
    Unusable,
    to_event,
)
from edgectl.controller.store.feed import AccountingEvent
from edgectl.model import Prefix

SECRET = b"s3cret-s3cret-s3cret"
ARRIVAL = datetime(2026, 11, 29, 3, 14, tzinfo=UTC)


@pytest.fixture(scope="module")
def words() -> Any:
    return codec.dictionary()


def request(words: Any, secret: bytes = SECRET, identifier: int = 7, **attributes: Any) -> bytes:
    named = {key.replace("_", "-"): value for key, value in attributes.items()}
    raw = named.pop("raw", None)
    return codec.encode_request(secret, identifier, named, words, raw)


def event(words: Any, rule: AccountRule | None = None, **attributes: Any) -> AccountingEvent:
    rule = rule or AccountRule()
    packet = codec.decode(request(words, **attributes), SECRET, rule.key, words)
    return to_event("bng-1", packet, ARRIVAL, rule)


def test_start_with_both_families(words: Any) -> None:
    got = event(
        words,
        Acct_Status_Type="Start",
        Acct_Session_Id="s-1",
        User_Name="cust-42",
        Framed_IP_Address="100.64.1.2",
        Delegated_IPv6_Prefix="2001:db8:a000:100::/56",
        Event_Timestamp=int(ARRIVAL.timestamp()) - 30,
    )
    assert got == AccountingEvent(
        source="bng-1",
        kind="start",
        at=ARRIVAL - timedelta(seconds=30),
        session_id="s-1",
        account="cust-42",
        ipv4=Prefix.parse("100.64.1.2"),
        ipv6=Prefix.parse("2001:db8:a000:100::/56"),
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [("Start", "start"), ("Interim-Update", "interim"), ("Stop", "stop")],
)
def test_session_kinds(words: Any, status: str, kind: str) -> None:
    got = event(words, Acct_Status_Type=status, Acct_Session_Id="s", User_Name="a")
    assert (got.kind, got.ipv4, got.ipv6) == (kind, None, None)


@pytest.mark.parametrize(("status", "kind"), [("Accounting-On", "on"), ("Accounting-Off", "off")])
def test_nas_restart_has_no_session(words: Any, status: str, kind: str) -> None:
    got = event(words, Acct_Status_Type=status)
    assert (got.kind, got.session_id, got.account, got.at) == (kind, None, None, ARRIVAL)


def test_session_time_of_interim_and_stop(words: Any) -> None:
    got = event(
        words,
        Acct_Status_Type="Interim-Update",
        Acct_Session_Id="s",
        User_Name="a",
        Acct_Session_Time=600,
    )
    assert got.session_time == 600
    started = event(
        words, Acct_Status_Type="Start", Acct_Session_Id="s", User_Name="a", Acct_Session_Time=0
    )
    assert started.session_time is None


def test_time_is_arrival_less_delay_without_a_timestamp(words: Any) -> None:
    got = event(
        words, Acct_Status_Type="Stop", Acct_Session_Id="s", User_Name="a", Acct_Delay_Time=9
    )
    assert got.at == ARRIVAL - timedelta(seconds=9)


def test_a_timestamp_from_the_future_is_not_believed(words: Any) -> None:
    later = int((ARRIVAL + timedelta(hours=2)).timestamp())
    got = event(
        words, Acct_Status_Type="Start", Acct_Session_Id="s", User_Name="a", Event_Timestamp=later
    )
    assert got.at == ARRIVAL


def test_framed_prefix_when_no_delegation_and_no_128s(words: Any) -> None:
    got = event(
        words,
        Acct_Status_Type="Start",
        Acct_Session_Id="s",
        User_Name="a",
        Framed_IPv6_Prefix="2001:db8:1:2::/64",
        Framed_IPv6_Address="2001:db8:9::1",
    )
    assert got.ipv6 == Prefix.parse("2001:db8:1:2::/64")
    longer = event(
        words,
        Acct_Status_Type="Start",
        Acct_Session_Id="s",
        User_Name="a",
        Framed_IPv6_Prefix="2001:db8:1:2::/80",
        Framed_IP_Address="255.255.255.254",
    )
    assert (longer.ipv4, longer.ipv6) == (None, None)


def test_delegated_prefix_wins_over_framed(words: Any) -> None:
    got = event(
        words,
        Acct_Status_Type="Start",
        Acct_Session_Id="s",
        User_Name="a",
        Framed_IPv6_Prefix="2001:db8:1:2::/64",
        Delegated_IPv6_Prefix="2001:db8:2::/56",
    )
    assert got.ipv6 == Prefix.parse("2001:db8:2::/56")


def test_account_attributes(words: Any) -> None:
    base = {"Acct_Status_Type": "Start", "Acct_Session_Id": "s"}
    stripped = event(words, AccountRule(USER_NAME, True), User_Name="cust-1@isp.example", **base)
    assert stripped.account == "cust-1"
    kept = event(words, AccountRule(USER_NAME), User_Name="cust-1@isp.example", **base)
    assert kept.account == "cust-1@isp.example"
    by_class = event(words, AccountRule(CLASS), User_Name="x", Class=b"acct-9", **base)
    assert by_class.account == "acct-9"
    vendor = AccountRule((3561, 1))
    vsa = struct.pack("!I", 3561) + bytes([1, 2 + 6]) + b"cust-7"
    by_vendor = event(words, vendor, User_Name="x", raw={26: vsa}, **base)
    assert by_vendor.account == "cust-7"


@pytest.mark.parametrize(
    ("rule", "attributes", "outcome"),
    [
        (AccountRule(), {"Acct_Status_Type": "Start", "Acct_Session_Id": "s"}, "invalid"),
        (AccountRule(), {"Acct_Status_Type": "Start", "User_Name": "a"}, "invalid"),
        (
            AccountRule(),
            {"Acct_Status_Type": "Start", "Acct_Session_Id": "s", "User_Name": "a b"},
            "invalid",
        ),
        (
            AccountRule(CLASS),
            {"Acct_Status_Type": "Start", "Acct_Session_Id": "s", "User_Name": "a"},
            "invalid",
        ),
        (AccountRule(), {"Acct_Status_Type": "Failed", "User_Name": "a"}, "ignored"),
    ],
)
def test_authentic_but_unusable(
    words: Any, rule: AccountRule, attributes: dict[str, Any], outcome: str
) -> None:
    with pytest.raises(Unusable) as caught:
        event(words, rule, **attributes)
    assert caught.value.outcome == outcome


def test_wrong_secret_is_a_bad_authenticator(words: Any) -> None:
    data = request(words, secret=b"another-secret-of-16", Acct_Status_Type="Start")
    with pytest.raises(codec.Dropped) as caught:
        codec.decode(data, SECRET, USER_NAME, words)
    assert caught.value.reason == "bad_authenticator"


def _resign(data: bytes) -> bytes:
    """``data`` with a Request Authenticator made for its (edited) contents."""
    import hashlib

    body = data[:4] + bytes(16) + data[20:]
    return data[:4] + hashlib.md5(body + SECRET).digest() + data[20:]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x04\x01\x00", "malformed"),  # shorter than a header
        (b"\x04\x01\x00\x30" + bytes(16), "malformed"),  # length beyond the datagram
        (_resign(b"\x04\x01\x00\x17" + bytes(16) + b"\x28\x01\x00"), "malformed"),  # attr len 1
        # Framed-IP-Address of three octets.
        (
            _resign(
                b"\x04\x01\x00\x1b"
                + bytes(16)
                + b"\x28\x06\x00\x00\x00\x01"
                + b"\x08\x05\x01\x02\x03"
            ),
            "malformed",
        ),
        # Acct-Status-Type twice.
        (_resign(b"\x04\x01\x00\x20" + bytes(16) + b"\x28\x06\x00\x00\x00\x01" * 2), "malformed"),
        # No Acct-Status-Type at all.
        (_resign(b"\x04\x01\x00\x14" + bytes(16)), "malformed"),
        (_resign(b"\x01\x01\x00\x14" + bytes(16)), "not_accounting"),  # an Access-Request
    ],
)
def test_malformed_packets_are_dropped(words: Any, data: bytes, reason: str) -> None:
    with pytest.raises(codec.Dropped) as caught:
        codec.decode(data, SECRET, USER_NAME, words)
    assert caught.value.reason == reason


def test_reply_answers_the_request(words: Any) -> None:
    data = request(words, Acct_Status_Type="Start", Acct_Session_Id="s", User_Name="a")
    decoded = codec.decode(data, SECRET, USER_NAME, words)
    assert codec.is_response_to(decoded.reply, data, SECRET)
    assert not codec.is_response_to(decoded.reply, data, b"another-secret-of-16")
