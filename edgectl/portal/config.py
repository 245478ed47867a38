"""The portal's settings: the ``[portal]`` table of a TOML file.

```toml
[portal]
controller_url = "https://controller.isp.example:8470"
token_file = "/etc/edgectl/portal.token"   # a portal-role token; 0600, never world-readable
listen = "0.0.0.0:8080"                    # where gateways DNAT walled-garden HTTP to
public_url = "http://portal.isp.example:8080/"   # the captive API's user-portal-url
# ca_file = "/etc/edgectl/ca.pem"
# allow_plain_http = true                  # http:// to a non-loopback controller
# templates_dir = "/etc/edgectl/portal-templates"  # operator overrides (same names)
# listen_netns = "subscribers"             # bind the listener in this network namespace
#                                          # (the subscriber-facing side); the controller
#                                          # is reached from the portal's own namespace
default_language = "ja"                    # when Accept-Language names neither ja nor en
support = "0120-000-000"                   # shown on every page

[portal.categories.botnet]                 # text per hold category, per language
en = "A device on your line is part of a botnet."
ja = "お客様の回線の機器がボットネットに参加しています。"
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgectl import tomlfile
from edgectl.tomlfile import ConfigError, setting

__all__ = ["ConfigError", "PortalConfig", "load", "parse", "read_token"]

TABLE = "portal"
LANGUAGES = ("ja", "en")


@dataclass(frozen=True, slots=True)
class PortalConfig:
    controller_url: str
    token: str
    host: str = "0.0.0.0"
    port: int = 8080
    public_url: str = "http://portal.invalid/"
    ca_file: Path | None = None
    templates_dir: Path | None = None
    default_language: str = "ja"
    support: str = ""
    # category -> language -> text, over the shipped defaults (pages.CATEGORIES).
    categories: dict[str, dict[str, str]] = field(default_factory=dict)
    timeout: float = 5.0
    listen_netns: str | None = None


def _name(key: str) -> str:
    return f"{TABLE}.{key}"


def _nonempty(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _listen(value: object) -> tuple[str, int]:
    text = _nonempty(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _directory(value: object) -> Path:
    path = Path(_nonempty(value))
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory")
    return path


def _categories(value: object) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict):
        raise ConfigError(_name("categories"), "expected a table of categories")
    out: dict[str, dict[str, str]] = {}
    for category, texts in value.items():
        where = _name(f"categories.{category}")
        if not isinstance(texts, dict) or not texts:
            raise ConfigError(where, "expected a table of language = text")
        for language, text in texts.items():
            if language not in LANGUAGES:
                raise ConfigError(f"{where}.{language}", f"language must be one of {LANGUAGES}")
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{where}.{language}", "expected text")
        out[category] = dict(texts)
    return out


@dataclass(frozen=True, slots=True)
class _PortalFile:
    """The ``[portal]`` table as written: each field's type, default and check."""

    controller_url: str = setting(parse=_nonempty)
    token_file: str = setting(parse=_nonempty)
    listen: tuple[str, int] = setting(("0.0.0.0", 8080), parse=_listen)
    public_url: str | None = setting(None, parse=_nonempty)
    ca_file: str | None = setting(None, parse=_nonempty)
    allow_plain_http: bool = False
    templates_dir: Path | None = setting(None, parse=_directory)
    default_language: str = setting("ja", parse=_nonempty, choices=LANGUAGES)
    support: str = setting("", parse=_nonempty)
    categories: dict[str, dict[str, str]] = setting(parse=_categories, default_factory=dict)
    timeout: float = setting(5.0, low=0.1, high=60, unit="seconds")
    listen_netns: str | None = setting(None, parse=_nonempty)


def parse(document: dict[str, Any]) -> PortalConfig:
    read = tomlfile.read_section(_PortalFile, document, TABLE)
    host, port = read.listen
    return PortalConfig(
        controller_url=tomlfile.controller_url(
            read.controller_url, read.allow_plain_http, _name("controller_url")
        ),
        token=read_token(Path(read.token_file)),
        host=host,
        port=port,
        public_url=read.public_url or f"http://{host}:{port}/",
        ca_file=None if read.ca_file is None else Path(read.ca_file),
        templates_dir=read.templates_dir,
        default_language=read.default_language,
        support=read.support,
        categories=read.categories,
        timeout=read.timeout,
        listen_netns=read.listen_netns,
    )


def load(path: Path) -> PortalConfig:
    return parse(tomlfile.read_document(path))


def read_token(path: Path) -> str:
    """The portal token, refusing a file others can read (it acts for subscribers)."""
    return tomlfile.read_token(path, _name("token_file"))
