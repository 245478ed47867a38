"""``edgectl token create`` on a database nobody has migrated yet.

With the default ``migrate_on_start = true`` it migrates first and works;
with ``migrate_on_start = false`` (as the Ansible role writes it) it says to
run ``edgectl controller migrate`` instead of failing with a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgectl.cli import main


def _config(tmp_path: Path, *lines: str) -> Path:
    config = tmp_path / "controller.toml"
    config.write_text(
        "\n".join(["[controller]", f'database_url = "sqlite:///{tmp_path}/c.db"', *lines]) + "\n"
    )
    config.chmod(0o600)
    return config


def _create(config: Path) -> int:
    return main(["token", "create", "--role", "netops", "--name", "ops", "--config", str(config)])


@pytest.fixture(autouse=True)
def _no_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGECTL_CONTROLLER"):
            monkeypatch.delenv(name)


def test_token_create_migrates_a_fresh_database_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _create(_config(tmp_path)) == 0
    assert capsys.readouterr().out.startswith("edg_")


def test_without_migrate_on_start_it_asks_for_migrate_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "migrate_on_start = false")
    assert _create(config) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert "run `edgectl controller migrate` (same --config) first" in out.err
    assert "Traceback" not in out.err
    assert main(["controller", "migrate", "--config", str(config)]) == 0
    capsys.readouterr()
    assert _create(config) == 0
    assert capsys.readouterr().out.startswith("edg_")
