"""Model: prefixes, validation errors that name the field, JSON round trip."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgectl.model import ModelError, Prefix, state_from_data, state_to_data
from edgectl.model.prefix import PrefixIndex, merge, subscriber_key


def test_host_bits_are_an_error_not_truncated() -> None:
    with pytest.raises(ModelError) as caught:
        Prefix.parse("100.64.0.1/10", path="pools[0].prefixes[0]")
    assert caught.value.path == "pools[0].prefixes[0]"
    assert "host bits" in caught.value.reason and "100.64.0.0/10" in caught.value.reason


@pytest.mark.parametrize(
    "text",
    [
        "100.64.0.256",
        "2001:db8::g",
        "100.64.0.0/33",
        "x",
        "",
        "1.2.3.4\x00",
        "1.2.3.4/\u0661",
        "\ud800",
    ],
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(ModelError):
        Prefix.parse(text)


def test_bare_address_is_a_host_prefix_and_prints_bare() -> None:
    prefix = Prefix.parse("2001:DB8::1")
    assert prefix.length == 128 and str(prefix) == "2001:db8::1"


@given(st.ip_addresses(), st.integers(min_value=0, max_value=128))
def test_parse_agrees_with_ipaddress(address: ipaddress._BaseAddress, length: int) -> None:
    length = min(length, address.max_prefixlen)
    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
    prefix = Prefix.parse(str(network))
    assert (prefix.version, prefix.value, prefix.length) == (
        network.version,
        int(network.network_address),
        network.prefixlen,
    )
    assert Prefix.parse(str(prefix)) == prefix
    # str() is what state files and nft scripts carry: the address (inet_ntop's
    # spelling, which differs from ipaddress's for IPv4-mapped IPv6), then the
    # length unless it is a single address.
    text, _, length_text = str(prefix).partition("/")
    assert ipaddress.ip_address(text) == network.network_address
    bare = network.prefixlen == network.max_prefixlen
    assert length_text == ("" if bare else str(network.prefixlen))
    if network.network_address != address:
        with pytest.raises(ModelError):
            Prefix.parse(f"{address}/{length}")


def test_subscriber_key_masks_ipv6_to_the_delegation() -> None:
    address = Prefix.parse("2001:db8:1000:1ff::10")
    assert str(subscriber_key(address, 56)) == "2001:db8:1000:100::/56"
    v4 = Prefix.parse("100.64.0.10")
    assert subscriber_key(v4, 56) == v4


def test_overlap_helpers() -> None:
    named = [("a", Prefix.parse("100.64.0.0/16")), ("b", Prefix.parse("100.64.4.0/24"))]
    index = PrefixIndex(named)
    assert index.hits(Prefix.parse("100.64.4.7")) == ["a", "b"]
    assert index.hits(Prefix.parse("100.66.0.1")) == []
    assert index.hits(Prefix.parse("100.0.0.0/8")) == ["a", "b"]
    assert merge([Prefix.parse("100.64.0.0/25"), Prefix.parse("100.64.0.128/25")]) == [
        Prefix.parse("100.64.0.0/24")
    ]


MINIMAL = {
    "gateway": "gw1",
    "pools": [{"name": "dyn", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]}],
}


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        (
            {"pools": [{"name": "Dyn", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]}]},
            "pools[0].name",
        ),
        (
            {"pools": [{"name": "d", "kind": "roaming", "prefixes": ["100.64.0.0/16"]}]},
            "pools[0].kind",
        ),
        (
            {"pools": [{"name": "d", "kind": "dynamic", "prefixes": ["2001:db8::/40"]}]},
            "pools[0].subscriber_prefix_len",
        ),
        ({"pools": [{"name": "d", "kind": "dynamic", "prefixes": []}]}, "pools[0].prefixes"),
        ({"quarantines": [{"key": "100.64.0.1", "mode": "jail"}]}, "quarantines[0].mode"),
        (
            {"quarantines": [{"key": "100.64.0.1", "mode": "smtp", "expires": "tomorrow"}]},
            "quarantines[0].expires",
        ),
        (
            {
                "quarantines": [
                    {"key": "100.64.0.1", "mode": "smtp", "expires": "2026-12-01T00:00:00"}
                ]
            },
            "quarantines[0].expires",
        ),
        ({"settings": {"mail_ports": [25, 70000]}}, "settings.mail_ports[1]"),
        ({"settings": {"colour": "red"}}, "settings.colour"),
        (
            {"rate_limits": [{"name": "r", "new_per_minute": 0, "burst": 1}]},
            "rate_limits[0].new_per_minute",
        ),
    ],
)
def test_errors_name_the_field(patch: dict[str, object], path: str) -> None:
    with pytest.raises(ModelError) as caught:
        state_from_data({**MINIMAL, **patch})
    assert caught.value.path == path


def test_duplicate_keys_are_refused() -> None:
    entries = [{"key": "100.64.0.1", "mode": "smtp"}, {"key": "100.64.0.1", "mode": "block"}]
    with pytest.raises(ModelError, match="given twice"):
        state_from_data({**MINIMAL, "quarantines": entries})


def test_newer_schema_is_refused() -> None:
    with pytest.raises(ModelError) as caught:
        state_from_data({**MINIMAL, "schema": 2})
    assert caught.value.path == "schema"


def test_json_round_trip(policy_state: object) -> None:
    data = state_to_data(policy_state)  # type: ignore[arg-type]
    assert state_from_data(data) == policy_state
