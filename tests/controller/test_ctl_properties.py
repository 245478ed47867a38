"""Property tests (hypothesis) for prefix handling and delta consistency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ctl_backends import SqliteBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgectl.controller.compile import (
    PlacedPool,
    Topology,
    delegation_problem,
    hex_of,
    hex_range,
)
from edgectl.controller.store import Store, accounts, desired, gateways, holds
from edgectl.controller.store.catalog import create_pool
from edgectl.controller.store.subscribers import Binding, bind_many
from edgectl.model import GatewaySettings, Pool, PoolKind, Prefix, QuarantineMode, state_from_data
from edgectl.model.delta import patch
from edgectl.model.serial import delta_from_data


@st.composite
def prefixes(draw: st.DrawFn, version: int | None = None) -> Prefix:
    version = version or draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    length = draw(st.integers(0, bits))
    value = draw(st.integers(0, (1 << bits) - 1))
    return Prefix(version, value & ~((1 << (bits - length)) - 1) & ((1 << bits) - 1), length)


@given(prefixes(), prefixes())
def test_hex_sorts_like_the_address(a: Prefix, b: Prefix) -> None:
    if a.version == b.version:
        assert (a.value < b.value) == (hex_of(a) < hex_of(b))
        assert len(hex_of(a)) == len(hex_of(b))


@given(prefixes(), st.data())
def test_hex_range_is_containment(key: Prefix, data: st.DataObject) -> None:
    bits = key.bits
    value = data.draw(st.integers(0, (1 << bits) - 1))
    host = Prefix(key.version, value, bits)
    low, high = hex_range(key)
    assert (low <= hex_of(host) <= high) == key.contains(host)


@given(st.integers(32, 64), st.data())
def test_ipv6_key_is_the_delegated_supernet(pool_length: int, data: st.DataObject) -> None:
    pool_prefix = Prefix(6, data.draw(st.integers(0, (1 << 128) - 1)), 128).supernet(pool_length)
    delegated = data.draw(st.integers(pool_length, 64))
    pool = Pool("p", PoolKind.DYNAMIC, (pool_prefix,), subscriber_prefix_len=delegated)
    topology = Topology([PlacedPool(pool, frozenset({1}))])
    length = data.draw(st.integers(delegated, 64))
    offset = data.draw(st.integers(0, (1 << (128 - pool_length)) - 1))
    session = Prefix(6, pool_prefix.value | offset, 128).supernet(length)
    assert delegation_problem(topology, session) is None
    ((_, key),) = topology.placements(session)
    assert key.length == delegated
    assert key.contains(session) and pool_prefix.contains(key)
    assert Prefix.parse(str(key)) == key  # canonical text round-trips
    if delegated > pool_length:
        shorter = session.supernet(delegated - 1)
        assert delegation_problem(topology, shorter) is not None
        assert topology.placements(shorter) == []


@given(prefixes(4))
def test_ipv4_key_is_the_address(address: Prefix) -> None:
    pool = Pool("p", PoolKind.DYNAMIC, (Prefix(4, 0, 0),))
    topology = Topology([PlacedPool(pool, frozenset({1}))])
    found = topology.placements(address)
    assert found == ([(topology.pools[0], address)] if address.is_host else [])


# Delta consistency: whatever happens, snapshot(old) + delta(old -> now) == snapshot(now).

ACCOUNTS = [f"acct{i}" for i in range(6)]
V4 = [f"100.64.0.{i}" for i in range(1, 6)] + [f"100.65.0.{i}" for i in range(1, 4)]
V6 = ["2001:db8:a000:100::/56", "2001:db8:a000:1ff::/64", "2001:db8:a000:200::/56"]

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("bind"),
            st.sampled_from(ACCOUNTS),
            st.none() | st.sampled_from(V4),
            st.none() | st.sampled_from(V6),
        ),
        st.tuples(
            st.just("hold"), st.sampled_from(ACCOUNTS), st.sampled_from(list(QuarantineMode))
        ),
        st.tuples(st.just("lift"), st.sampled_from(ACCOUNTS)),
        st.tuples(st.just("exempt"), st.sampled_from(ACCOUNTS)),
        st.tuples(st.just("prefix"), st.sampled_from(V4 + V6)),
    ),
    min_size=1,
    max_size=25,
)


def _reference_keys(store: Store) -> set[str]:
    """The keys gw must hold, computed independently of compile: dyn is
    100.64.0.0/16 (a /32 each) and 2001:db8:a000::/40 (a /56 each)."""
    v4, v6 = Prefix.parse("100.64.0.0/16"), Prefix.parse("2001:db8:a000::/40")
    keys: set[str] = set()
    for entry in holds.listing(store, "quarantine", holds.HoldFilter(limit=1000)):
        if entry["prefix"] is not None:
            addresses = [entry["prefix"]]
        else:
            session = accounts.account_view(store, entry["account"], history=False)["session"] or {}
            addresses = [a for a in (session.get("ipv4"), session.get("ipv6")) if a]
        for text in addresses:
            address = Prefix.parse(text)
            if v4.contains(address):
                keys.add(str(address))
            elif v6.contains(address):
                keys.add(str(address.supernet(56)))
    return keys


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SqliteBackend:
    return SqliteBackend(tmp_path_factory.mktemp("prop"))


def _world(store: Store) -> int:
    create_pool(
        store,
        "t",
        Pool(
            "dyn",
            PoolKind.DYNAMIC,
            (Prefix.parse("100.64.0.0/16"), Prefix.parse("2001:db8:a000::/40")),
            subscriber_prefix_len=56,
        ),
    )
    create_pool(store, "t", Pool("other", PoolKind.DYNAMIC, (Prefix.parse("100.65.0.0/16"),)))
    settings = GatewaySettings(
        resolvers=(Prefix.parse("192.0.2.53"),), portal=(Prefix.parse("192.0.2.80"),)
    )
    gateways.create_gateway(store, "t", gateways.GatewaySpec("gw", settings, ("dyn",)))
    return gateways.gateway_id(store, "gw")


def _apply(store: Store, operation: tuple[object, ...]) -> None:
    kind = operation[0]
    try:
        if kind == "bind":
            _, account, v4, v6 = operation
            bind_many(
                store,
                "t",
                [
                    Binding(
                        str(account),
                        None if v4 is None else Prefix.parse(v4),
                        None if v6 is None else Prefix.parse(v6),
                    )
                ],
            )
        elif kind == "hold":
            spec = holds.QuarantineSpec(mode=operation[2], reason="r", account=str(operation[1]))  # type: ignore[arg-type]
            holds.quarantine(store, "t", spec)
        elif kind == "prefix":
            spec = holds.QuarantineSpec(
                mode=QuarantineMode.SMTP, reason="r", prefix=Prefix.parse(str(operation[1]))
            )
            holds.quarantine(store, "t", spec)
        elif kind == "exempt":
            holds.exempt(store, "t", holds.ExemptionSpec(str(operation[1]), "T", "r"))
        else:
            for entry in holds.listing(
                store, "quarantine", holds.HoldFilter(account=str(operation[1]))
            ):
                holds.lift(store, "t", "quarantine", entry["id"], "done")
    except Exception as error:  # refusals (409/422) are part of the sequence, not failures
        if type(error).__name__ not in ("Conflict", "Invalid"):
            raise


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=operations, after=operations)
def test_snapshot_plus_delta_is_the_new_snapshot(
    template: SqliteBackend, before: list[tuple[object, ...]], after: list[tuple[object, ...]]
) -> None:
    store = Store.open(template.fresh_url(), migrate=False)
    try:
        gateway = _world(store)
        for operation in before:
            _apply(store, operation)
        old = json.loads(desired.serve(store, gateway, None).body)
        for operation in after:
            _apply(store, operation)
        new = json.loads(desired.serve(store, gateway, None).body)
        served = json.loads(desired.serve(store, gateway, old["revision"]).body)
        assert served["kind"] == "delta"
        patched = patch(state_from_data(old["state"]), delta_from_data(served["delta"]))
        assert patched == state_from_data(new["state"])
        if new["revision"] == old["revision"]:
            assert served["delta"]["quarantines"] == {"upserts": [], "removals": []}
        assert {q["key"] for q in new["state"]["quarantines"]} == _reference_keys(store)
    finally:
        store.close()
        Path(store.database.url.removeprefix("sqlite:///")).unlink()
