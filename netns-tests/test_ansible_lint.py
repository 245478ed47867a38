"""The Ansible content is held to the linters: ansible-lint's production profile and
ansible-playbook --syntax-check, on every playbook with the example inventory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ANSIBLE_DIR = Path(__file__).resolve().parent.parent / "ansible"
VENV_BIN = Path(sys.executable).parent
PLAYBOOKS = (
    "site.yml",
    "controller.yml",
    "catalogue.yml",
    "gateways.yml",
    "decommission.yml",
    "wheelhouse.yml",
)


def _tool(name: str) -> Path:
    path = VENV_BIN / name
    if not path.exists():
        message = (
            f"{name} is not installed in the virtualenv (pip install ansible-core ansible-lint)"
        )
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        {
            "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "NO_COLOR": "1",
        }
    )
    return env


def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    lint = _tool("ansible-lint")
    done = subprocess.run(
        [str(lint), "--offline", "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_ansible_playbook_syntax_check(tmp_path: Path, playbook: str) -> None:
    ansible_playbook = _tool("ansible-playbook")
    done = subprocess.run(
        [str(ansible_playbook), "--syntax-check", playbook],
        cwd=ANSIBLE_DIR,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
