"""Deltas between revisions, their JSON form, and the persisted last-known-good."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from edgectl.agent import persist
from edgectl.agent.persist import PersistError, StateStore, Step
from edgectl.model import DesiredState, ModelError, Prefix, Quarantine, QuarantineMode
from edgectl.model.delta import StateDelta, diff, patch, patch_chain
from edgectl.model.serial import delta_from_data, delta_to_data, state_to_data


def _moved(state: DesiredState) -> DesiredState:
    quarantines = dict(state.quarantines)
    del quarantines[Prefix.parse("100.64.0.11")]
    key = Prefix.parse("100.64.0.77")
    quarantines[key] = Quarantine(key, QuarantineMode.SMTP, "cust-1002")
    return replace(state, revision=state.revision + 1, quarantines=quarantines)


def test_diff_then_patch_gives_the_new_state(policy_state: DesiredState) -> None:
    new = _moved(policy_state)
    delta = diff(policy_state, new)
    assert delta.structure is None
    assert [q.key for q in delta.quarantines.upserts] == [Prefix.parse("100.64.0.77")]
    assert delta.quarantines.removals == (Prefix.parse("100.64.0.11"),)
    assert patch(policy_state, delta) == new
    assert delta_from_data(json.loads(json.dumps(delta_to_data(delta)))) == delta


def test_no_change_is_an_empty_delta(policy_state: DesiredState) -> None:
    assert diff(policy_state, policy_state).empty


def test_patch_refuses_a_delta_for_another_revision(policy_state: DesiredState) -> None:
    delta = diff(policy_state, _moved(policy_state))
    newer = replace(policy_state, revision=policy_state.revision + 5)
    with pytest.raises(ModelError) as caught:
        patch(newer, delta)
    assert caught.value.path == "from_revision"


def test_persisted_state_round_trips(tmp_path: Path, policy_state: DesiredState) -> None:
    store = StateStore(tmp_path / "state")
    assert store.load() is None
    store.save(policy_state, generation=41)
    applied = store.load()
    assert applied is not None and applied.state == policy_state and applied.generation == 41
    assert (tmp_path / "state").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not a state file"),
        ('{"generation": 1, "state": {"schema": 99, "gateway": "g"}}', "schema"),
        ('{"generation": 1}', "not a state file"),
    ],
)
def test_corrupt_or_newer_state_is_refused(tmp_path: Path, content: str, reason: str) -> None:
    store = StateStore(tmp_path)
    store.path.write_text(content)
    with pytest.raises(PersistError, match=reason):
        store.load()


# -- the journal: deltas appended to the last snapshot ------------------------------


def _quarantined(state: DesiredState, *addresses: str) -> DesiredState:
    quarantines = dict(state.quarantines)
    for address in addresses:
        key = Prefix.parse(address)
        quarantines[key] = Quarantine(key, QuarantineMode.BLOCK, None)
    return replace(state, revision=state.revision + 1, quarantines=quarantines)


@dataclass(frozen=True)
class Record:
    """An applied revision as the agent hands it over: the state and how it got there."""

    state: DesiredState
    generation: int | None
    delta: StateDelta | None = None


def _write(store: StateStore, records: list[Record]) -> None:
    store.record([Step(r.delta, r.generation) for r in records], records[-1].state)


def _chain(state: DesiredState, steps: int) -> list[Record]:
    """``steps`` one-key revisions after ``state``, each with the delta that led to it."""
    records = []
    for step in range(steps):
        new = _quarantined(state, f"100.64.7.{step + 1}")
        records.append(Record(new, 100 + step, diff(state, new)))
        state = new
    return records


def _writes_a_snapshot(store: StateStore, records: list[Record]) -> None:
    """Writing ``records`` replaces the snapshot (no append), and they load back."""
    inode = store.path.stat().st_ino
    _write(store, records)
    assert store.path.stat().st_ino != inode, "appended to the journal, not a new snapshot"
    applied = StateStore(store.directory).load()
    assert applied is not None and applied.state == records[-1].state


def _journal_lines(store: StateStore) -> list[str]:
    return store.journal_path.read_text().splitlines()


def test_deltas_are_appended_and_replayed_without_rewriting_the_snapshot(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=41)
    snapshot = store.path.stat()
    records = _chain(policy_state, 3)
    _write(store, records[:2])
    _write(store, records[2:])
    assert store.path.stat().st_ino == snapshot.st_ino  # never rewritten
    assert len(_journal_lines(store)) == 1 + 3  # header, then one line per delta
    applied = StateStore(tmp_path).load()
    assert applied is not None
    assert applied.state == records[-1].state and applied.generation == 102


def test_a_restarted_store_goes_on_appending_to_the_loaded_journal(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    records = _chain(policy_state, 4)
    first = StateStore(tmp_path)
    first.save(policy_state, generation=1)
    _write(first, records[:2])
    again = StateStore(tmp_path)
    assert again.load() is not None
    inode = again.path.stat().st_ino
    _write(again, records[2:])
    assert again.path.stat().st_ino == inode
    applied = StateStore(tmp_path).load()
    assert applied is not None and applied.state == records[-1].state


def test_a_full_state_or_a_gap_in_the_chain_writes_a_snapshot(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    records = _chain(policy_state, 3)
    inode = store.path.stat().st_ino
    # records[1] skipped: records[2]'s delta does not continue what is on disk.
    _write(store, [records[0], records[2]])
    assert store.path.stat().st_ino != inode
    assert _journal_lines(store)[1:] == []
    applied = StateStore(tmp_path).load()
    assert applied is not None and applied.state == records[2].state
    # No delta (a snapshot or a full sync): a snapshot too.
    _write(store, [Record(policy_state, 7)])
    applied = StateStore(tmp_path).load()
    assert applied is not None and applied.state == policy_state and applied.generation == 7


def test_a_journal_larger_than_the_snapshot_is_folded_into_a_new_one(
    tmp_path: Path, policy_state: DesiredState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(persist, "_JOURNAL_FLOOR_BYTES", 0)
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    snapshot_bytes = store.path.stat().st_size
    records = _chain(policy_state, 40)
    for record in records:
        _write(store, [record])
        # Never much more than a snapshot's worth of journal.
        assert store.journal_path.stat().st_size <= snapshot_bytes * 2 + 4096
    assert store.path.stat().st_size > snapshot_bytes  # a later, larger snapshot
    applied = StateStore(tmp_path).load()
    assert applied is not None and applied.state == records[-1].state


def test_a_torn_last_entry_is_ignored_and_the_next_write_is_a_snapshot(
    tmp_path: Path, policy_state: DesiredState, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    records = _chain(policy_state, 3)
    _write(store, records[:2])
    full = store.journal_path.read_bytes()
    _write(store, records[2:])
    torn = store.journal_path.read_bytes()[: len(full) + 25]  # the crash came mid-append
    store.journal_path.write_bytes(torn)
    reopened = StateStore(tmp_path)
    applied = reopened.load()
    assert applied is not None and applied.state == records[1].state
    assert "the write was interrupted" in caplog.text
    assert store.journal_path.read_bytes() == torn  # loading writes nothing
    _writes_a_snapshot(reopened, records[2:])


def test_a_journal_of_an_older_snapshot_is_not_replayed(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    _write(store, _chain(policy_state, 2))
    stale = store.journal_path.read_bytes()
    store.save(policy_state, generation=5)
    # As if the crash came after the new snapshot's rename, before the journal's.
    store.journal_path.write_bytes(stale)
    applied = StateStore(tmp_path).load()
    assert applied is not None and applied.state == policy_state and applied.generation == 5


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not a state file"),
        ('{"generation": 1}', "not a state file"),
        ('{"generation": "x", "delta": DELTA}', "generation"),
    ],
)
def test_a_corrupt_journal_entry_refuses_the_persisted_state(
    tmp_path: Path, policy_state: DesiredState, line: str, reason: str
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    records = _chain(policy_state, 2)
    _write(store, records)
    lines = _journal_lines(store)
    delta = json.dumps(json.loads(lines[1])["delta"])
    lines[1] = line.replace("DELTA", delta)
    store.journal_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PersistError, match=rf"line 2: .*{reason}"):
        StateStore(tmp_path).load()


def test_a_journal_entry_that_does_not_continue_the_chain_is_refused(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    _write(store, _chain(policy_state, 3))
    lines = _journal_lines(store)
    del lines[2]  # a hole: line 3 no longer follows line 2
    store.journal_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PersistError, match=r"line 3: .*does not continue revision"):
        StateStore(tmp_path).load()


def test_a_failed_append_makes_the_next_write_a_snapshot(
    tmp_path: Path, policy_state: DesiredState, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    records = _chain(policy_state, 2)
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError):
        _write(store, records[:1])
    monkeypatch.setattr(os, "fsync", real_fsync)
    _writes_a_snapshot(store, records[1:])


def test_a_snapshot_written_before_the_journal_existed_still_loads(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    store = StateStore(tmp_path)
    document = {"generation": 3, "state": state_to_data(policy_state)}
    store.path.write_text(json.dumps(document))
    applied = store.load()
    assert applied is not None and applied.state == policy_state and applied.generation == 3
    records = _chain(policy_state, 1)
    _write(store, records)
    applied = StateStore(tmp_path).load()
    assert applied is not None and applied.state == records[0].state


def test_patch_chain_equals_patching_one_delta_at_a_time(policy_state: DesiredState) -> None:
    records = _chain(policy_state, 5)
    deltas = [record.delta for record in records if record.delta is not None]
    one_by_one = policy_state
    for delta in deltas:
        one_by_one = patch(one_by_one, delta)
    assert patch_chain(policy_state, deltas) == one_by_one == records[-1].state
    with pytest.raises(ModelError) as caught:
        patch_chain(policy_state, [deltas[0], deltas[2]])
    assert caught.value.path == "from_revision"


def test_remove_deletes_snapshot_and_journal(tmp_path: Path, policy_state: DesiredState) -> None:
    store = StateStore(tmp_path)
    assert store.remove() == []
    store.save(policy_state, generation=1)
    _write(store, _chain(policy_state, 1))
    assert store.remove() == [store.path, store.journal_path]
    assert StateStore(tmp_path).load() is None


def test_zero_filled_last_entries_are_ignored_like_a_torn_one(
    tmp_path: Path, policy_state: DesiredState, caplog: pytest.LogCaptureFixture
) -> None:
    """A power loss mid-append can leave the last lines zero-filled, not just cut."""
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    records = _chain(policy_state, 4)
    _write(store, records[:2])
    lines = _journal_lines(store)
    _write(store, records[2:])
    tail = len(_journal_lines(store)) - len(lines)
    store.journal_path.write_text("\n".join([*lines, *["\0" * 40] * tail]) + "\n")
    reopened = StateStore(tmp_path)
    applied = reopened.load()
    assert applied is not None and applied.state == records[1].state
    assert "ignoring the last 2 entries" in caplog.text
    inode = reopened.path.stat().st_ino
    _write(reopened, records[2:])
    assert reopened.path.stat().st_ino != inode  # a snapshot, not an append after garbage


def test_any_failure_while_recording_makes_the_next_write_a_snapshot(
    tmp_path: Path, policy_state: DesiredState, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    records = _chain(policy_state, 2)

    def broken(delta: StateDelta) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(persist, "delta_to_data", broken)
    with pytest.raises(RuntimeError):
        _write(store, records[:1])
    monkeypatch.undo()
    _writes_a_snapshot(store, records[1:])


def test_a_failed_snapshot_write_leaves_the_old_files_and_no_temporary(
    tmp_path: Path, policy_state: DesiredState, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    before = store.path.read_bytes()
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError):
        store.save(_chain(policy_state, 1)[0].state, generation=2)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["applied.json", "journal.jsonl"]


def test_temporaries_left_by_a_crash_are_removed_by_the_next_snapshot(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, generation=1)
    (tmp_path / ".applied-crashed").write_text("{")
    (tmp_path / ".journal-crashed").write_text("{")
    store.save(policy_state, generation=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["applied.json", "journal.jsonl"]


def test_the_store_epoch_is_persisted_and_a_new_one_is_a_snapshot(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    store = StateStore(tmp_path)
    store.record([Step(None, 1, "e1")], policy_state)
    moved = _moved(policy_state)
    store.record([Step(diff(policy_state, moved), 2, "e1")], moved)  # appended, same epoch
    assert len(store.journal_path.read_text().splitlines()) == 2
    loaded = StateStore(tmp_path).load()
    assert loaded is not None and loaded.epoch == "e1" and loaded.state == moved
    inode = store.path.stat().st_ino
    # The same state in a new epoch (a restored controller database): even
    # an empty delta is written as a snapshot naming the new epoch.
    store.record([Step(diff(moved, moved), 3, "e2")], moved)
    assert store.path.stat().st_ino != inode
    loaded = StateStore(tmp_path).load()
    assert loaded is not None and loaded.epoch == "e2"


def test_a_state_file_without_an_epoch_loads_with_none(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    store = StateStore(tmp_path)
    store.save(policy_state, 1)
    document = json.loads(store.path.read_text())
    del document["epoch"]  # as written before epochs
    store.path.write_text(json.dumps(document))
    loaded = StateStore(tmp_path).load()
    assert loaded is not None and loaded.epoch is None
