"""The restore payload: the same table as a render, and refused whenever it may not be.

The kernel side (a restart that commits it, then real TCP against the
rules) is netns-tests/test_agent_restore.py.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from edgectl.agent import restore_payload
from edgectl.agent.apply import ApplyResult
from edgectl.agent.daemon.kernel import Commit
from edgectl.agent.daemon.loop import Agent, LoopSettings
from edgectl.agent.daemon.metrics import Metrics
from edgectl.agent.nft import NftError
from edgectl.agent.persist import Applied, StateStore, Step
from edgectl.agent.render import render_full, render_keys
from edgectl.agent.restore_payload import Payload
from edgectl.model import DesiredState, Exemption, Prefix, Quarantine, QuarantineMode
from edgectl.model.delta import StateDelta, diff

from .conftest import NOW

_ADD = re.compile(r"add element inet edgectl (\S+) \{\n\t(.*?)\n\}\n", re.DOTALL)


def _elements(script: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, body in _ADD.findall(script):
        found.setdefault(name, set()).update(body.split(",\n\t"))
    assert _ADD.sub("", script) == ""  # nothing but element adds
    return found


@pytest.fixture
def state(policy_state: DesiredState) -> DesiredState:
    """The policy plus exact keys of every kind: timed, expired, IPv6, exempt."""
    quarantines = dict(policy_state.quarantines)
    exemptions = dict(policy_state.exemptions)
    for text, mode, expires in (
        ("100.64.0.20", QuarantineMode.BLOCK, None),
        ("100.64.0.21", QuarantineMode.WALLED_GARDEN, NOW + timedelta(hours=2, seconds=1)),
        ("100.64.0.22", QuarantineMode.SMTP, NOW - timedelta(seconds=1)),  # expired
        ("2001:db8:1000:300::/56", QuarantineMode.SMTP, NOW + timedelta(days=3)),
    ):
        key = Prefix.parse(text)
        quarantines[key] = Quarantine(key, mode, expires=expires)
    key = Prefix.parse("2001:db8:1000:400::/56")
    exemptions[key] = Exemption(key)
    return replace(policy_state, quarantines=quarantines, exemptions=exemptions)


def _saved(tmp_path: Path, state: DesiredState) -> tuple[StateStore, Payload]:
    store = StateStore(tmp_path / "state", payload=True)
    store.save(state, generation=5)
    payload = store.load_payload()
    assert payload is not None
    return store, payload


def test_the_payload_commits_what_a_render_of_the_state_does(
    tmp_path: Path, state: DesiredState
) -> None:
    _, payload = _saved(tmp_path, state)
    assert payload.revision == state.revision
    for now in (NOW, NOW + timedelta(hours=2)):  # later: fewer seconds left, one more expired
        assert _elements(payload.keys_script(now)) == _elements(str(render_keys(state, now)))
        # The structure (prefix keys included) renders as the state's own does.
        assert str(render_full(payload.structure, now, keys=False).transaction) == str(
            render_full(state, now, keys=False).transaction
        )
    later = _elements(payload.keys_script(NOW + timedelta(hours=2)))
    assert "100.64.0.21 timeout 1s" in later["q_walled_garden_4"]
    assert "100.64.0.22" not in str(later)


def test_keys_rendered_a_chunk_at_a_time_are_the_same_keys(
    tmp_path: Path, state: DesiredState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore_payload, "_CHUNK", 2)
    more = {Prefix.parse(f"100.64.1.{i}"): QuarantineMode.SMTP for i in range(1, 8)}
    state = replace(
        state,
        quarantines={**state.quarantines, **{k: Quarantine(k, m) for k, m in more.items()}},
    )
    _, payload = _saved(tmp_path, state)
    assert payload.static.count("add element") > len(_elements(payload.static))
    assert _elements(payload.keys_script(NOW)) == _elements(str(render_keys(state, NOW)))
    assert str(render_full(payload.structure, NOW, keys=False).transaction) == str(
        render_full(state, NOW, keys=False).transaction
    )


def test_the_cli_store_writes_no_payload_and_removes_a_stale_one(
    tmp_path: Path, state: DesiredState
) -> None:
    store, _ = _saved(tmp_path, state)
    StateStore(store.directory).save(state, generation=6)
    assert not store.payload_path.exists()
    assert store.load_payload() is None


@pytest.mark.parametrize(
    "damage",
    [
        "snapshot changed",
        "snapshot of another save",
        "element text changed",
        "trailer garbage",
        "truncated",
    ],
)
def test_a_payload_that_does_not_match_is_not_used(
    tmp_path: Path, state: DesiredState, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = _saved(tmp_path, state)
    text = store.payload_path.read_bytes()
    if damage == "snapshot changed":
        store.path.write_bytes(
            store.path.read_bytes().replace(b'"generation":5', b'"generation":6')
        )
    elif damage == "snapshot of another save":
        stale = store.payload_path.read_bytes()
        store.save(replace(state, revision=state.revision + 1), generation=6)
        store.payload_path.write_bytes(stale)
    elif damage == "element text changed":
        store.payload_path.write_bytes(text.replace(b"100.64.0.20", b"100.64.0.29"))
    elif damage == "trailer garbage":
        store.payload_path.write_bytes(text[:-1].rpartition(b"\n")[0] + b"\n{not json\n")
    else:
        store.payload_path.write_bytes(text[: len(text) // 2])
    with caplog.at_level(logging.INFO, logger="edgectl.agent"):
        assert store.load_payload() is None
    assert "not used" in caplog.text


def test_a_journal_with_changes_falls_back_and_an_empty_one_does_not(
    tmp_path: Path, state: DesiredState
) -> None:
    store, _ = _saved(tmp_path, state)
    assert store.load() is not None  # the journal appends continue this snapshot
    unchanged = StateDelta(state.gateway, state.revision, state.revision)
    store.record([Step(unchanged, 6)], state)  # a drift repair's entry
    assert store.load_payload() is not None
    # A torn append (a crash mid-write) is ignored, as load ignores it.
    with store.journal_path.open("a") as file:
        file.write('{"generation": 7, "del')
    assert store.load_payload() is not None
    store.save(state, generation=5)
    store.load()
    newer = _one_more_quarantine(state)
    store.record([Step(diff(state, newer), 7)], newer)
    assert store.load_payload() is None


def test_a_journal_of_an_older_snapshot_does_not_stop_the_payload(
    tmp_path: Path, state: DesiredState
) -> None:
    store, _ = _saved(tmp_path, state)
    store.journal_path.write_text('{"journal": "0000000000000000", "revision": 1}\n{"x": 1}\n')
    assert store.load_payload() is not None


class _Kernel:
    """A kernel that takes payloads (or refuses them) and full syncs, and says which."""

    def __init__(self, refuse_payload: bool = False) -> None:
        self.lock = threading.RLock()
        self.expected: int | None = None
        self.suspect = False
        self.commits: list[tuple[str, int]] = []
        self.cut: list[DesiredState] = []
        self.refuse_payload = refuse_payload

    def _commit(self, kind: str, revision: int) -> Commit:
        self.commits.append((kind, revision))
        self.expected = len(self.commits) + 1
        return Commit(ApplyResult("full", revision, 0.001, 10), self.expected)

    def restore_payload(self, payload: Payload) -> Commit:
        if self.refuse_payload:
            raise NftError("Error: Could not process rule: No such file or directory")
        return self._commit("payload", payload.revision)

    def cut_held(self, state: DesiredState) -> None:
        self.cut.append(state)

    def full_sync(self, state: DesiredState) -> Commit:
        return self._commit("full", state.revision)

    def generation(self) -> int:
        return self.expected or 1

    def apply_delta(self, old: DesiredState, delta: StateDelta) -> Commit:
        raise AssertionError("not on restore")

    def drift(self, applied: Applied) -> list[str]:
        return []

    def counters(self) -> dict[str, tuple[int, int]]:
        return {}


class _Unasked:
    def desired(self, since: int | None, wait: float, epoch: str | None) -> object:
        raise AssertionError("restore never asks the controller")

    def report(self, applied_revision: int, detail: object, offenders: object) -> bool:
        raise AssertionError("restore never asks the controller")


def _agent(kernel: _Kernel, store: StateStore, gateway: str = "gw-tokyo-1") -> Agent:
    return Agent(
        LoopSettings.defaults(gateway),
        kernel,
        _Unasked(),  # type: ignore[arg-type]
        store,
        Metrics(gateway),
    )


def test_restore_commits_the_payload_then_adopts_the_state_file(
    tmp_path: Path, state: DesiredState, caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = _saved(tmp_path, state)
    kernel = _Kernel()
    agent = _agent(kernel, store)
    with caplog.at_level(logging.INFO, logger="edgectl.agent"):
        assert agent.restore()
    assert kernel.commits == [("payload", state.revision)]
    assert agent.applied is not None and agent.applied.state == state
    assert agent.applied.generation == kernel.expected and agent.cursor == state.revision
    assert kernel.cut == [agent.applied.state]  # held flows cut, as after a full sync
    assert "restored revision 7 from disk" in caplog.text
    # What a restart with the ordinary path ends with, too.
    plain = _agent(_Kernel(), StateStore(tmp_path / "state"))
    plain.store.payload_path.unlink()  # type: ignore[attr-defined]
    assert plain.restore()
    assert plain.applied is not None and plain.applied.state == agent.applied.state
    assert plain.cursor == agent.cursor and plain.epoch == agent.epoch


def test_a_payload_the_kernel_refuses_falls_back_to_a_full_sync(
    tmp_path: Path, state: DesiredState
) -> None:
    store, _ = _saved(tmp_path, state)
    kernel = _Kernel(refuse_payload=True)
    agent = _agent(kernel, store)
    assert agent.restore()
    assert kernel.commits == [("full", state.revision)]
    assert agent.applied is not None and agent.applied.state == state


def test_a_payload_of_another_gateway_is_not_committed(tmp_path: Path, state: DesiredState) -> None:
    store, _ = _saved(tmp_path, state)
    kernel = _Kernel()
    assert not _agent(kernel, store, gateway="gw-osaka-1").restore()
    assert kernel.commits == []


def test_a_clean_stop_folds_a_journal_with_changes_into_a_snapshot(
    tmp_path: Path, state: DesiredState
) -> None:
    store, _ = _saved(tmp_path, state)
    unchanged = StateDelta(state.gateway, state.revision, state.revision)
    store.record([Step(unchanged, 6)], state)
    assert not store.checkpoint(state, 6, None)  # nothing to fold: the payload holds
    newer = _one_more_quarantine(state)
    store.record([Step(diff(state, newer), 7)], newer)
    assert store.load_payload() is None
    # A restarted process knows the journal's changes from loading it.
    reloaded = StateStore(store.directory, payload=True)
    applied = reloaded.load()
    assert applied is not None and applied.state == newer
    assert reloaded.checkpoint(applied.state, 7, None)
    payload = reloaded.load_payload()
    assert payload is not None and payload.revision == newer.revision
    assert _elements(payload.keys_script(NOW)) == _elements(str(render_keys(newer, NOW)))
    assert not StateStore(store.directory).checkpoint(newer, 7, None)  # the CLI's: never


def _one_more_quarantine(state: DesiredState) -> DesiredState:
    """The next revision of ``state``: one more held key (a journal line that changes it)."""
    key = Prefix.parse("100.64.0.30")
    return replace(
        state,
        revision=state.revision + 1,
        quarantines={**state.quarantines, key: Quarantine(key, QuarantineMode.SMTP)},
    )
