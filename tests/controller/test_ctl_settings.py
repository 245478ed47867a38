"""Settings refuse insecure values; the database file must not be world-readable."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgectl.controller import cli
from edgectl.controller.errors import Invalid
from edgectl.controller.settings import Settings, check, load
from edgectl.controller.store import Store


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[controller]\ndatabase_url = "sqlite:////x/y.db"\nport = 9000\n')
    loaded = load(
        config,
        env={"EDGECTL_CONTROLLER_PORT": "9100", "EDGECTL_CONTROLLER_MIGRATE_ON_START": "false"},
    )
    assert (loaded.database_url, loaded.port, loaded.migrate_on_start) == (
        "sqlite:////x/y.db",
        9100,
        False,
    )


@pytest.mark.parametrize(
    ("text", "env", "field"),
    [
        ("[controller]\nprot = 1\n", {}, "controller.prot"),
        ("[controller]\nport = 'x'\n", {}, "controller.port"),
        ("", {"EDGECTL_CONTROLLER_PORT": "many"}, "EDGECTL_CONTROLLER_PORT"),
        ("", {"EDGECTL_CONTROLLER_HOST": "0.0.0.0"}, "host"),
        ("", {"EDGECTL_CONTROLLER_DATABASE_URL": "sqlite:///:memory:"}, "database_url"),
        ("", {"EDGECTL_CONTROLLER_DATABASE_URL": "mysql://x"}, "database_url"),
        ("", {"EDGECTL_CONTROLLER_TLS_CERTFILE": "/c.pem"}, "tls_keyfile"),
        ("", {"EDGECTL_CONTROLLER_TOMBSTONE_RETENTION": "1"}, "tombstone_retention"),
        ("not toml [", {}, "config"),
        ("", {"EDGECTL_CONTROLLER_MAX_BODY_BYTES": "0"}, "max_body_bytes"),
        ("", {"EDGECTL_CONTROLLER_HEADER_TIMEOUT": "0"}, "header_timeout"),
        ("", {"EDGECTL_CONTROLLER_BODY_TIMEOUT": "1e9"}, "body_timeout"),
        ("", {"EDGECTL_CONTROLLER_KEEP_ALIVE_TIMEOUT": "0"}, "keep_alive_timeout"),
        ("", {"EDGECTL_CONTROLLER_MAX_CONNECTIONS": "0"}, "max_connections"),
        ("", {"EDGECTL_CONTROLLER_DOCS": "maybe"}, "EDGECTL_CONTROLLER_DOCS"),
        ("[controller]\nsession_retention_days = 0\n", {}, "session_retention_days"),
        ("[controller]\nsession_retention_days = 1.5\n", {}, "controller.session_retention_days"),
        ("", {"EDGECTL_CONTROLLER_STALE_SESSION_AFTER": "30"}, "stale_session_after"),
        ("", {"EDGECTL_CONTROLLER_STALE_SESSION_AFTER": "-1"}, "stale_session_after"),
        ("[controller]\nstale_session_after = '1h'\n", {}, "controller.stale_session_after"),
    ],
)
def test_insecure_or_wrong_values_refused(
    tmp_path: Path, text: str, env: dict[str, str], field: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(Invalid) as caught:
        load(config, env=env)
    assert caught.value.path == field


def test_session_settings_defaults_and_values(tmp_path: Path) -> None:
    assert (Settings().session_retention_days, Settings().stale_session_after) == (400, 0.0)
    config = tmp_path / "c.toml"
    config.write_text("[controller]\nsession_retention_days = 30\nstale_session_after = 1000\n")
    loaded = load(config, env={})
    assert (loaded.session_retention_days, loaded.stale_session_after) == (30, 1000.0)


def test_public_listener_needs_tls_or_an_explicit_proxy() -> None:
    check(Settings(host="0.0.0.0", allow_plain_http=True))
    check(Settings(host="::", tls_certfile="/c", tls_keyfile="/k"))
    with pytest.raises(Invalid):
        check(Settings(host="192.0.2.1"))


def test_password_in_world_readable_config_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[controller]\ndatabase_url = "postgresql+psycopg://u:secret@db/edgectl"\n')
    config.chmod(0o644)
    with pytest.raises(Invalid, match="world-readable"):
        load(config, env={})
    config.chmod(0o640)
    assert load(config, env={}).database_url.endswith("/edgectl")


def test_world_readable_database_refused(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    Store.open(f"sqlite:///{path}").close()
    assert path.stat().st_mode & 0o777 == 0o600  # created owner-only
    path.chmod(0o644)
    with pytest.raises(Invalid, match="world-readable"):
        Store.open(f"sqlite:///{path}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgectl")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_migrate_and_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[controller]\ndatabase_url = "sqlite:///{tmp_path}/c.db"\n')
    parser = _parser()
    args = parser.parse_args(["controller", "migrate", "--config", str(config)])
    assert args.func(args) == 0
    args = parser.parse_args(
        ["token", "create", "--role", "abuse", "--name", "ana", "--config", str(config)]
    )
    assert args.func(args) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("edg_") and len(token) > 40
    args = parser.parse_args(
        ["token", "create", "--role", "abuse", "--name", "ana", "--config", str(config)]
    )
    assert args.func(args) == 2  # a second "ana" is refused, not duplicated
    args = parser.parse_args(["token", "list", "--config", str(config)])
    assert args.func(args) == 0
    listed = capsys.readouterr().out
    assert "ana\tabuse" in listed and token not in listed
    with pytest.raises(SystemExit):
        parser.parse_args(["token", "create", "--role", "agent", "--name", "x"])
    args = parser.parse_args(["token", "revoke", "ana", "--config", str(config)])
    assert args.func(args) == 0


def test_cli_reports_insecure_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[controller]\nhost = "0.0.0.0"\n')
    args = _parser().parse_args(["controller", "--config", str(config)])
    assert args.func(args) == 2
    assert "in clear" in capsys.readouterr().err
