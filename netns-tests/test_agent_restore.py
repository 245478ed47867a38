"""``edgectl agent restore``: the last-known-good state in force without any controller."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl.agent import kernel_readback as kr
from edgectl.agent.netlink.nfsocket import NfNetlink
from edgectl.agent.persist import StateStore
from edgectl.lab.netns import in_netns
from edgectl.model import DesiredState, Pool, PoolKind, Prefix, Quarantine, QuarantineMode
from edgectl.testing.fleet import AgentFiles
from edgectl.testing.processes import EDGECTL

# The edgectl entry point of the interpreter running the tests (the venv).


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"ectl-rs-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def _config(tmp_path: Path, namespace: str) -> Path:
    return AgentFiles(tmp_path).write(
        token="edg_not_used_by_restore",
        # Nothing listens there: restore must not need the controller.
        controller_url="http://127.0.0.1:9",
        gateway="gw-r",
        netns=namespace,
    )


def _edgectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGECTL, *args], capture_output=True, text=True, timeout=60)


def test_restore_applies_the_persisted_state_without_a_controller(
    tmp_path: Path, namespace: str
) -> None:
    key = Prefix.parse("100.64.0.9")
    state = DesiredState(
        gateway="gw-r",
        revision=12,
        pools=(Pool("home", PoolKind.DYNAMIC, (Prefix.parse("100.64.0.0/16"),)),),
        quarantines={key: Quarantine(key, QuarantineMode.BLOCK)},
    )
    config = _config(tmp_path, namespace)
    StateStore(tmp_path / "state").save(state, generation=None)
    done = _edgectl("agent", "restore", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "restored revision 12" in done.stderr
    with in_netns(namespace), NfNetlink() as sock:
        assert kr.read_table(sock, 1, "edgectl") is not None
        assert (
            kr.missing_elements(sock, 1, "edgectl", "q_block_4", [kr.encode_ipv4("100.64.0.9")])
            == []
        )


def test_restore_with_nothing_persisted_exits_1_and_leaves_the_kernel_alone(
    tmp_path: Path, namespace: str
) -> None:
    done = _edgectl("agent", "restore", "--config", str(_config(tmp_path, namespace)))
    assert done.returncode == 1
    with in_netns(namespace), NfNetlink() as sock:
        assert kr.read_table(sock, 1, "edgectl") is None
