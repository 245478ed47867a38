"""The portal's [portal] settings: what parses, and what is refused naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgectl.portal.config import ConfigError, parse


def token_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "portal.token"
    path.write_text("edg_portal-token\n")
    path.chmod(mode)
    return path


def document(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    table = {
        "controller_url": "http://127.0.0.1:8470",
        "token_file": str(token_file(tmp_path)),
        **extra,
    }
    return {"portal": table}


def test_the_smallest_config(tmp_path: Path) -> None:
    config = parse(document(tmp_path))
    assert (config.host, config.port, config.token) == ("0.0.0.0", 8080, "edg_portal-token")
    assert config.default_language == "ja" and config.support == ""
    assert config.listen_netns is None and config.categories == {}


def test_categories_and_listen(tmp_path: Path) -> None:
    config = parse(
        document(
            tmp_path,
            listen="198.51.100.80:80",
            categories={"botnet": {"en": "Botnet.", "ja": "ボットネット。"}},
            support="0120-000-000",
        )
    )
    assert (config.host, config.port) == ("198.51.100.80", 80)
    assert config.categories["botnet"]["ja"] == "ボットネット。"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"colour": "red"}, "portal.colour"),
        ({"controller_url": "http://controller.isp.example:8470"}, "portal.controller_url"),
        ({"controller_url": "ftp://x"}, "portal.controller_url"),
        ({"listen": "8080"}, "portal.listen"),
        ({"default_language": "fr"}, "portal.default_language"),
        ({"categories": {"botnet": {"fr": "x"}}}, "portal.categories.botnet.fr"),
        ({"timeout": True}, "portal.timeout"),
        ({"templates_dir": "/nonexistent/templates"}, "portal.templates_dir"),
    ],
)
def test_refused_naming_the_field(tmp_path: Path, extra: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(document(tmp_path, **extra))
    assert refused.value.field == field


def test_a_world_readable_token_is_refused(tmp_path: Path) -> None:
    data = document(tmp_path)
    token_file(tmp_path, 0o644)
    with pytest.raises(ConfigError, match="world-readable"):
        parse(data)
