"""Raw nfnetlink element batches against a real kernel, in a throwaway namespace."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from edgectl.agent import kernel_readback as kr
from edgectl.agent.apply import Dataplane
from edgectl.agent.kernel_write import commit_elements
from edgectl.agent.netlink.nfsocket import NetlinkError
from edgectl.agent.nft import NftError
from edgectl.agent.transaction import ElementOp
from edgectl.model import DesiredState, Pool, PoolKind, Prefix, Quarantine, QuarantineMode
from edgectl.model.delta import diff

NOW = datetime.now(UTC)


@pytest.fixture
def dataplane() -> Iterator[Dataplane]:
    name = f"ectl-kw-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with Dataplane(name) as plane:
            yield plane
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def _state() -> DesiredState:
    pools = (
        Pool("home4", PoolKind.DYNAMIC, (Prefix.parse("100.64.0.0/16"),)),
        Pool("home6", PoolKind.DYNAMIC, (Prefix.parse("2001:db8:1000::/40"),), 56),
    )
    return DesiredState(gateway="gw", revision=1, pools=pools)


def _present(plane: Dataplane, set_name: str, address: str) -> bool:
    key = kr.encode_ipv6(address) if ":" in address else kr.encode_ipv4(address)
    return not plane.missing_elements(set_name, [key])


def test_a_delta_goes_through_the_raw_batch_and_is_in_force(dataplane: Dataplane) -> None:
    old = _state()
    dataplane.full_sync(old)
    before = dataplane.generation()
    v4, v6 = Prefix.parse("100.64.0.9"), Prefix.parse("2001:db8:1000:100::/56")
    new = replace(
        old,
        revision=2,
        quarantines={
            v4: Quarantine(v4, QuarantineMode.BLOCK, expires=NOW + timedelta(hours=1)),
            v6: Quarantine(v6, QuarantineMode.SMTP),
        },
    )
    result = dataplane.apply_delta(old, diff(old, new))
    assert result.kind == "delta"
    assert _present(dataplane, "q_block_4", "100.64.0.9")
    assert _present(dataplane, "q_smtp_6_56", "2001:db8:1000:100::")
    # One transaction: the ruleset generation moved by exactly one.
    assert dataplane.generation() == before + 1
    lifted = replace(new, revision=3, quarantines={})
    dataplane.apply_delta(new, diff(new, lifted))
    assert not _present(dataplane, "q_block_4", "100.64.0.9")
    assert not _present(dataplane, "q_smtp_6_56", "2001:db8:1000:100::")


def test_a_refused_batch_changes_nothing(dataplane: Dataplane) -> None:
    dataplane.full_sync(_state())
    before = dataplane.generation()
    ops = [
        ElementOp("add", "q_block_4", (("100.64.0.7", None),)),
        ElementOp("add", "no_such_set", (("100.64.0.8", None),)),
    ]
    with pytest.raises(NetlinkError):
        commit_elements(dataplane.sock, ops)
    assert not _present(dataplane, "q_block_4", "100.64.0.7")
    assert dataplane.generation() == before
    # The socket is still usable for the next transaction.
    commit_elements(dataplane.sock, ops[:1])
    assert _present(dataplane, "q_block_4", "100.64.0.7")


def test_a_delta_against_a_missing_table_is_refused_cleanly(dataplane: Dataplane) -> None:
    old = _state()
    key = Prefix.parse("100.64.0.5")
    new = replace(old, revision=2, quarantines={key: Quarantine(key, QuarantineMode.SMTP)})
    with pytest.raises(NftError, match="kernel unchanged"):
        dataplane.apply_delta(old, diff(old, new))
    assert not dataplane.table_exists()


def test_a_large_delta_is_one_transaction(dataplane: Dataplane) -> None:
    """20,000 keys: several messages (attribute lengths are 16 bits), one batch."""
    old = _state()
    dataplane.full_sync(old)
    before = dataplane.generation()
    base = Prefix.parse("100.64.0.0").value
    keys = [Prefix(4, base + 256 + i, 32) for i in range(20_000)]
    new = replace(
        old,
        revision=2,
        quarantines={
            k: Quarantine(k, QuarantineMode.SMTP, expires=NOW + timedelta(hours=2)) for k in keys
        },
    )
    assert dataplane.apply_delta(old, diff(old, new)).kind == "delta"
    assert dataplane.generation() == before + 1
    sample = [kr.encode_ipv4(keys[i].address) for i in (0, 9_999, 19_999)]
    assert kr.missing_elements(dataplane.sock, 1, "edgectl", "q_smtp_4", sample) == []
