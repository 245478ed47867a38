"""Deltas between revisions, their JSON form, and the persisted last-known-good."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from edgectl.agent.persist import PersistError, StateStore
from edgectl.model import DesiredState, ModelError, Prefix, Quarantine, QuarantineMode
from edgectl.model.delta import diff, patch
from edgectl.model.serial import delta_from_data, delta_to_data


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
