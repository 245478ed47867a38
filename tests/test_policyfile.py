"""Policy files: a JSON file's text serves as the state file's document, unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from edgectl.agent.persist import StateStore
from edgectl.model import DesiredState
from edgectl.model.serial import state_to_data
from edgectl.policyfile import PolicyFileError, read_policy_file


def test_a_json_policy_is_saved_as_written_and_loads_back(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    path = tmp_path / "policy.json"
    text = json.dumps(state_to_data(policy_state), indent=2)  # as an operator formats it
    path.write_text(text)
    policy = read_policy_file(path)
    assert policy.state == policy_state
    assert policy.json_text == text
    store = StateStore(tmp_path / "state")
    store.save(policy.state, 7, state_json=policy.json_text)
    document = json.loads(store.path.read_text())
    assert document["state"] == json.loads(text)
    applied = StateStore(tmp_path / "state").load()
    assert applied is not None
    assert (applied.state, applied.generation) == (policy_state, 7)


def test_a_state_written_out_is_the_whole_document_dumped(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    """Without ``state_json`` the file is byte for byte the document ``json.dumps`` writes."""
    store = StateStore(tmp_path)
    store.save(policy_state, 3, "epoch-1")
    written = store.path.read_text()
    document = json.loads(written)
    assert list(document) == ["generation", "journal", "epoch", "state"]
    assert written == json.dumps(document, separators=(",", ":")) + "\n"
    assert document["state"] == state_to_data(policy_state)


def test_a_non_ascii_or_toml_policy_is_not_reused_as_text(
    tmp_path: Path, policy_state: DesiredState
) -> None:
    key, held = next(iter(policy_state.quarantines.items()))
    state = replace(policy_state, quarantines={key: replace(held, account="Zoë")})
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(state_to_data(state), ensure_ascii=False), encoding="utf-8")
    policy = read_policy_file(path)
    assert policy.state == state
    assert policy.json_text is None
    toml = Path(__file__).parent / "data" / "policy.toml"
    assert read_policy_file(toml).json_text is None


def test_a_bad_json_policy_names_the_entry_and_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    entries = [{"key": "100.64.0.1", "mode": "smtp"}, {"key": "100.64.0.2", "mode": "smpt"}]
    path.write_text(json.dumps({"gateway": "gw", "quarantines": entries}))
    with pytest.raises(PolicyFileError, match=r"quarantines\[1\]\.mode"):
        read_policy_file(path)
