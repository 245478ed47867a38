"""[controller.radius] and its clients file are checked at start, naming the key."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from radius_support import SECRET, clients_file

from edgectl.controller import cli
from edgectl.controller.errors import Invalid
from edgectl.controller.radius import config as radius_config
from edgectl.controller.radius.events import CLASS, USER_NAME
from edgectl.controller.settings import load


def settings_file(tmp_path: Path, radius: str) -> Path:
    path = tmp_path / "controller.toml"
    path.write_text(f'[controller]\ndatabase_url = "sqlite:///{tmp_path}/c.db"\n\n{radius}')
    return path


def test_off_unless_listening(tmp_path: Path) -> None:
    assert load(settings_file(tmp_path, ""), env={}).radius is None
    assert (
        load(settings_file(tmp_path, "[controller.radius]\nlisten = []\n"), env={}).radius is None
    )


def test_a_full_table(tmp_path: Path) -> None:
    clients = clients_file(
        tmp_path,
        ("bng-1", "192.0.2.10", SECRET),
        ("bng-pool", "192.0.2.0/24", SECRET + "x"),
        ("bng-6", "2001:db8::/64", SECRET),
    )
    text = f"""[controller.radius]
listen = ["0.0.0.0:1813", "[::]:1813"]
clients = "{clients}"
account = "User-Name"
strip_realm = true
max_queue = 1000
"""
    radius = load(settings_file(tmp_path, text), env={}).radius
    assert radius is not None
    assert radius.listen == (("0.0.0.0", 1813), ("::", 1813))
    assert (radius.account.key, radius.account.strip_realm) == (USER_NAME, True)
    assert radius.max_queue == 1000
    found = radius.clients.find
    assert found("192.0.2.10").name == "bng-1"  # type: ignore[union-attr]
    assert found("192.0.2.11").name == "bng-pool"  # type: ignore[union-attr]
    assert found("::ffff:192.0.2.12").name == "bng-pool"  # type: ignore[union-attr]
    assert found("2001:db8::5").name == "bng-6"  # type: ignore[union-attr]
    assert found("198.51.100.1") is None
    assert SECRET not in repr(radius)


def test_account_attributes(tmp_path: Path) -> None:
    clients = clients_file(tmp_path, ("bng-1", "192.0.2.10", SECRET))
    base = {"listen": "0.0.0.0:1813", "clients": str(clients)}
    by_class = radius_config.parse({**base, "account": "Class"})
    assert by_class is not None and by_class.account.key == CLASS
    vendor = radius_config.parse({**base, "account": {"vendor": 3561, "type": 1}})
    assert vendor is not None and vendor.account.key == (3561, 1)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"listen": "1813"}, "controller.radius.listen"),
        ({"listen": ["0.0.0.0:1813", "::1:1813"]}, "controller.radius.listen[1]"),
        ({"listen": "0.0.0.0:70000"}, "controller.radius.listen"),
        ({"listen": 1813}, "controller.radius.listen"),
        ({"listen": "0.0.0.0:1813"}, "controller.radius.clients"),
        ({"account": "Calling-Station-Id"}, "controller.radius.account"),
        ({"account": {"vendor": 0, "type": 1}}, "controller.radius.account.vendor"),
        ({"account": {"vendor": 9, "type": 300}}, "controller.radius.account.type"),
        ({"account": "Class", "strip_realm": True}, "controller.radius.strip_realm"),
        ({"stale_session_after": 7200}, "controller.radius.stale_session_after"),
        ({"max_queue": 0}, "controller.radius.max_queue"),
        ({"max_batch": 1.5}, "controller.radius.max_batch"),
        ({"secret": "x"}, "controller.radius.secret"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, table: dict[str, object], key: str) -> None:
    clients = clients_file(tmp_path, ("bng-1", "192.0.2.10", SECRET))
    full = {"listen": "0.0.0.0:1813", "clients": str(clients), **table}
    if key == "controller.radius.clients":
        del full["clients"]
    with pytest.raises(Invalid) as caught:
        radius_config.parse(full)
    assert caught.value.path == key


@pytest.mark.parametrize(
    ("rows", "key"),
    [
        ([("bng 1", "192.0.2.10", SECRET)], "client[0].name"),
        ([("bng-1", "192.0.2.300", SECRET)], "client[0].address"),
        ([("bng-1", "0.0.0.0/0", SECRET)], "client[0].address"),
        ([("bng-1", "192.0.2.10", "short")], "client[0].secret"),
        ([("a", "192.0.2.10", SECRET), ("b", "192.0.2.10", SECRET)], "client[1].address"),
        ([], "client"),
    ],
)
def test_bad_clients_name_the_entry(
    tmp_path: Path, rows: list[tuple[str, str, str]], key: str
) -> None:
    clients = clients_file(tmp_path, *rows)
    with pytest.raises(Invalid) as caught:
        radius_config.parse({"listen": "0.0.0.0:1813", "clients": str(clients)})
    assert caught.value.path == f"{clients}: {key}"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_clients_readable_by_others_refused(tmp_path: Path, mode: int) -> None:
    clients = clients_file(tmp_path, ("bng-1", "192.0.2.10", SECRET), mode=mode)
    with pytest.raises(Invalid) as caught:
        radius_config.parse({"listen": "0.0.0.0:1813", "clients": str(clients)})
    assert caught.value.path == "controller.radius.clients"
    assert f"{mode:04o}" in caught.value.reason


def test_clients_owned_by_someone_else_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = clients_file(tmp_path, ("bng-1", "192.0.2.10", SECRET), mode=0o400)
    owner = clients.stat().st_uid
    # The file keeps its owner; the controller runs as another user.
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(Invalid) as caught:
        radius_config.parse({"listen": "0.0.0.0:1813", "clients": str(clients)})
    assert caught.value.path == "controller.radius.clients"
    assert f"uid {owner}" in caught.value.reason


def test_missing_clients_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(Invalid) as caught:
        radius_config.parse({"listen": "0.0.0.0:1813", "clients": str(tmp_path / "none.toml")})
    assert caught.value.path == "controller.radius.clients"


def test_cli_refuses_with_a_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = clients_file(tmp_path, ("bng-1", "192.0.2.10", SECRET), mode=0o644)
    config = settings_file(
        tmp_path, f'[controller.radius]\nlisten = "127.0.0.1:1813"\nclients = "{clients}"\n'
    )
    status = cli.controller(argparse.Namespace(config=config, action="serve"))
    error = capsys.readouterr().err
    assert status != 0
    assert "controller.radius.clients" in error and "chmod 600" in error
    assert "Traceback" not in error
