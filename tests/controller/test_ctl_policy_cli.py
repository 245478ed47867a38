"""``edgectl controller load-policies FILE``: policies from a TOML file, all or none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgectl.cli import main
from edgectl.controller.store import Store, policies

POLICY = """
[[policy]]
name = "fbl"
mode = "propose"
window = 2592000
strikes = [{source = "report", class = "spam"}]
steps = [
  {strike = 1, mode = "walled-garden", duration = 86400},
  {strike = 2, mode = "block", review = true},
]
"""


@pytest.fixture(autouse=True)
def _no_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGECTL_CONTROLLER"):
            monkeypatch.delenv(name)


def test_load_policies_from_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "controller.toml"
    config.write_text(f'[controller]\ndatabase_url = "sqlite:///{tmp_path}/c.db"\n')
    config.chmod(0o600)
    good = tmp_path / "policies.toml"
    good.write_text(POLICY)
    bad = tmp_path / "bad.toml"
    bad.write_text(POLICY + POLICY.replace('"fbl"', '"other"').replace("2592000", "5"))
    assert main(["controller", "load-policies", str(bad), "--config", str(config)]) == 2
    assert "policy[1].spec.window" in capsys.readouterr().err
    assert main(["controller", "load-policies", str(good), "--config", str(config)]) == 0
    assert "policy fbl: loaded" in capsys.readouterr().out
    store = Store.open(f"sqlite:///{tmp_path}/c.db", migrate=False)
    try:
        [loaded] = policies.listing(store)
    finally:
        store.close()
    assert (loaded["name"], loaded["mode"], loaded["actor"]) == (
        "fbl",
        "propose",
        "cli:policies.toml",
    )
    assert loaded["steps"][1] == {"strike": 2, "mode": "block", "duration": None, "review": True}
