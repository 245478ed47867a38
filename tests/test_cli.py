"""CLI: bad input gets a message naming the field and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.cli import main

DATA = Path(__file__).parent / "data"


def test_render_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(DATA / "policy.toml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("add table inet edgectl\ndelete table inet edgectl\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'gateway = "g"\n[[pools]]\nname = "x"\nkind = "dynamic"\n'
            'prefixes = ["100.64.0.1/10"]\n',
            "pools[0].prefixes[0]",
        ),
        ('gateway = "g"\nrevision = \n', "line 2"),
        ('gateway = "g"\n[settings]\nop25b_ports = [25, 587]\n', "settings.op25b_ports[1]"),
        (
            'gateway = "g"\n[[quarantines]]\nkey = "0.0.0.0/0"\nmode = "block"\n',
            "quarantines[0.0.0.0/0]",
        ),
    ],
)
def test_bad_policy_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    assert main(["render", "-f", str(policy)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", "/nonexistent/policy.toml"]) == 2
    assert "No such file" in capsys.readouterr().err


def test_unknown_namespace_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "plan",
            "-f",
            str(DATA / "policy.toml"),
            "--netns",
            "ectl-no-such-ns",
            "--state-dir",
            str(tmp_path),
        ]
    )
    assert code == 3
    assert "no network namespace named 'ectl-no-such-ns'" in capsys.readouterr().err


def test_plan_detailed_exitcode_keeps_2_for_pending_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('gateway = "g"\n[settings]\nop25b_ports = [465]\n')
    args = ["plan", "-f", str(policy), "--state-dir", str(tmp_path), "--detailed-exitcode"]
    assert main(args) == 1
    assert "settings.op25b_ports[0]" in capsys.readouterr().err


def test_each_registrar_registers_exactly_its_listed_commands() -> None:
    """``edgectl X`` imports only the module the table names for X, so a
    command missing from (or wrongly placed in) the table would not be found."""
    import argparse
    import importlib

    from edgectl.cli import REGISTRARS

    for module, commands in REGISTRARS:
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        importlib.import_module(module).register(subparsers)
        assert tuple(subparsers.choices) == commands, module


def test_a_command_imports_only_its_own_module() -> None:
    """The agent's boot-time restore must not pay for the controller's imports."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from edgectl.cli import main\n"
        "try:\n"
        "    main(['agent', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('sqlalchemy', 'alembic', 'fastapi', 'httpx') if m in sys.modules]\n"
        "print('heavy:' + ','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "heavy:"


def test_help_without_a_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from edgectl.cli import REGISTRARS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for _, commands in REGISTRARS:
        for command in commands:
            assert command in out
