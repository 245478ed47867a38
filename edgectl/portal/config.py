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

import ipaddress
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgectl.tomlfile import TomlFileError, read_toml

TABLE = "portal"
LANGUAGES = ("ja", "en")


class ConfigError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _string(table: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(_name(key), "expected a non-empty string")
    return value


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(_name("listen"), f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


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


KNOWN = {
    "controller_url",
    "token_file",
    "listen",
    "public_url",
    "ca_file",
    "allow_plain_http",
    "templates_dir",
    "default_language",
    "support",
    "categories",
    "timeout",
    "listen_netns",
}


def parse(document: dict[str, Any]) -> PortalConfig:
    table = document.get(TABLE)
    if not isinstance(table, dict):
        raise ConfigError(TABLE, "the file needs a [portal] table")
    unknown = sorted(set(table) - KNOWN)
    if unknown:
        raise ConfigError(_name(unknown[0]), f"unknown setting (known: {', '.join(sorted(KNOWN))})")
    url = _string(table, "controller_url")
    if url is None:
        raise ConfigError(_name("controller_url"), "is required")
    allow_plain = table.get("allow_plain_http", False)
    if not isinstance(allow_plain, bool):
        raise ConfigError(_name("allow_plain_http"), "expected true or false")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(_name("controller_url"), f"{url!r} is not an http(s):// URL")
    if parts.scheme == "http" and not _loopback(parts.hostname) and not allow_plain:
        raise ConfigError(
            _name("controller_url"),
            "plain http to a non-loopback controller sends the token in clear; use https "
            "(or allow_plain_http = true behind a TLS-terminating proxy)",
        )
    token_file = _string(table, "token_file")
    if token_file is None:
        raise ConfigError(_name("token_file"), "is required")
    host, port = _listen(_string(table, "listen", "0.0.0.0:8080") or "")
    language = _string(table, "default_language", "ja")
    if language not in LANGUAGES:
        raise ConfigError(_name("default_language"), f"must be one of {LANGUAGES}")
    timeout = table.get("timeout", 5.0)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0.1 <= timeout <= 60
    ):
        raise ConfigError(_name("timeout"), "must be 0.1..60 seconds")
    ca_file = _string(table, "ca_file")
    templates = _string(table, "templates_dir")
    if templates is not None and not Path(templates).is_dir():
        raise ConfigError(_name("templates_dir"), f"{templates} is not a directory")
    return PortalConfig(
        controller_url=url.rstrip("/"),
        token=read_token(Path(token_file)),
        host=host,
        port=port,
        public_url=_string(table, "public_url", f"http://{host}:{port}/") or "",
        ca_file=None if ca_file is None else Path(ca_file),
        templates_dir=None if templates is None else Path(templates),
        default_language=language or "ja",
        support=_string(table, "support") or "",
        categories=_categories(table.get("categories", {})),
        timeout=float(timeout),
        listen_netns=_string(table, "listen_netns"),
    )


def load(path: Path) -> PortalConfig:
    try:
        document = read_toml(path)
    except TomlFileError as error:
        raise ConfigError("config", str(error)) from None
    return parse(document)


def read_token(path: Path) -> str:
    """The portal token, refusing a file others can read (it acts for subscribers)."""
    name = _name("token_file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as error:
        raise ConfigError(name, f"cannot open {path}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(name, f"{path} is not a regular file")
        if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ConfigError(name, f"{path} is world-readable or world-writable; chmod 600 it")
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    token = raw.decode("ascii", "replace").strip()
    if not token or any(c.isspace() for c in token) or not token.isascii() or len(token) > 256:
        raise ConfigError(name, f"{path} must hold exactly one token (one line, no spaces)")
    return token
