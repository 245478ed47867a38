"""The agent's config file (TOML, one ``[agent]`` table), checked once, naming the field.

Example::

    [agent]
    controller_url = "https://controller.isp.example:8470"
    # or several controller processes on one database, tried in this order;
    # the agent stays with the one that answers and moves on (keeping its
    # cursor) when it stops answering:
    # controller_urls = ["https://ctl-1.isp.example:8470", "https://ctl-2.isp.example:8470"]
    gateway = "gw-a"
    token_file = "/etc/edgectl/agent.token"   # mode 0600; world-readable is refused
    state_dir = "/var/lib/edgectl/agent"
    # netns = "lab-gw"                         # tests and the lab only
    # ca_file = "/etc/edgectl/ca.pem"          # TLS trust for the controller
    # allow_plain_http = true                  # http:// to a non-loopback controller (behind
    #                                          # a TLS proxy only); refused without it
    metrics_listen = "127.0.0.1:9471"          # "" turns the endpoint off
    poll_wait = 30.0        # long-poll: seconds the controller may hold a request
    backoff_min = 0.5       # first retry after a failure ...
    backoff_max = 30.0      # ... doubling (with jitter) up to this
    drift_interval = 0.5    # how often the ruleset generation is checked
    report_interval = 30.0  # a status report at least this often ...
    report_min_gap = 5.0    # ... and at most this often while revisions stream in
    request_timeout = 10.0  # connect/read allowance on top of poll_wait
    offenders_window = 900  # an offender stays reported this long after its last block
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgectl.agent.netns import NetnsError, netns_path
from edgectl.model.offenders import WINDOW_MAX
from edgectl.tomlfile import TomlFileError, read_toml

TABLE = "agent"
# The controller's gateway-name pattern (controller/api/models.py GatewayName).
_GATEWAY_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_.-")


class ConfigError(ValueError):
    """A config problem; ``field`` is the dotted name an operator looks for."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AgentConfig:
    controller_url: str  # the first of controller_urls
    gateway: str
    token_file: Path
    state_dir: Path
    netns: str | None = None
    ca_file: Path | None = None
    allow_plain_http: bool = False
    metrics_listen: tuple[str, int] | None = None
    poll_wait: float = 30.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    drift_interval: float = 0.5
    report_interval: float = 30.0
    # Each report is a database write on the controller: with 50 gateways
    # and one report per change, reports cost the controller about as much
    # CPU as serving the changes (BENCHMARKS-agent.md).
    report_min_gap: float = 5.0
    request_timeout: float = 10.0
    # Seconds an offender entry outlives its last log event (offenders.py).
    offenders_window: float = 900.0
    # Every controller to try, in order (controller_url alone: just it).
    controller_urls: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return self.controller_urls or (self.controller_url,)


# name -> (kind, lowest, highest) for the numeric settings.
_SECONDS: dict[str, tuple[float, float]] = {
    "poll_wait": (0.0, 3600.0),
    "backoff_min": (0.01, 3600.0),
    "backoff_max": (0.01, 3600.0),
    # The drift repair budget is 5 s; a slower check could not keep it.
    "drift_interval": (0.05, 4.0),
    "report_interval": (1.0, 3600.0),
    "report_min_gap": (0.0, 3600.0),
    "request_timeout": (0.5, 600.0),
    # Up to what the controller takes (a day): entries are bounded in
    # number (10,000), not by the window.
    "offenders_window": (1.0, float(WINDOW_MAX)),
}
_STRINGS = ("controller_url", "gateway", "token_file", "state_dir", "netns", "ca_file")
_REQUIRED = ("gateway", "token_file", "state_dir")
_KNOWN = {*_STRINGS, *_SECONDS, "metrics_listen", "allow_plain_http", "controller_urls"}
# More would only lengthen a fail-over pass; two or three processes is the design.
_URLS_MAX = 16


def _field(name: str) -> str:
    return f"{TABLE}.{name}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, allow_plain_http: bool, name: str = "controller_url") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(_field(name), f"{url!r} is not an http(s):// URL")
    if parts.query or parts.fragment:
        raise ConfigError(_field(name), "must not carry a query or fragment")
    if parts.scheme == "http" and not _loopback(parts.hostname) and not allow_plain_http:
        # The bearer token would cross the network in clear.
        raise ConfigError(
            _field(name),
            "plain http to a non-loopback controller sends the token in clear; use https "
            "(or allow_plain_http = true behind a TLS-terminating proxy)",
        )
    return url.rstrip("/")


def _check_urls(table: dict[str, Any], allow_plain_http: bool) -> tuple[str, ...]:
    """``controller_url`` or ``controller_urls`` (one of them), checked."""
    if "controller_urls" not in table:
        if "controller_url" not in table:
            raise ConfigError(_field("controller_url"), "required (or controller_urls)")
        return (_check_url(table["controller_url"], allow_plain_http),)
    if "controller_url" in table:
        raise ConfigError(
            _field("controller_urls"), "give controller_url or controller_urls, not both"
        )
    value = table["controller_urls"]
    if not isinstance(value, list) or not value or len(value) > _URLS_MAX:
        raise ConfigError(_field("controller_urls"), f"expected a list of 1-{_URLS_MAX} URLs")
    urls = []
    for index, url in enumerate(value):
        name = f"controller_urls[{index}]"
        if not isinstance(url, str):
            raise ConfigError(_field(name), "expected a string")
        checked = _check_url(url, allow_plain_http, name)
        if checked in urls:
            raise ConfigError(_field(name), f"{url!r} is listed twice")
        urls.append(checked)
    return tuple(urls)


def _check_listen(value: object) -> tuple[str, int] | None:
    name = _field("metrics_listen")
    if not isinstance(value, str):
        raise ConfigError(name, "expected a string like 127.0.0.1:9471")
    if value == "":
        return None
    host, colon, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(name, f"{value!r} is not HOST:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(name, f"{host!r} is not an IP address") from None
    return host, int(port_text)


def _check_gateway(value: str) -> str:
    if not value or len(value) > 64 or not set(value) <= _GATEWAY_CHARS or not value[0].isalnum():
        raise ConfigError(_field("gateway"), f"{value!r} is not a gateway name ([a-z0-9_.-])")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(_field(name), "expected a number of seconds")
    low, high = _SECONDS[name]
    if not low <= float(value) <= high:
        raise ConfigError(_field(name), f"must be between {low:g} and {high:g} seconds")
    return float(value)


def parse(document: dict[str, Any]) -> AgentConfig:
    """An AgentConfig from a parsed TOML document (no file system checks)."""
    table = document.get(TABLE)
    if not isinstance(table, dict):
        raise ConfigError(TABLE, "missing [agent] table")
    for name in table:
        if name not in _KNOWN:
            raise ConfigError(_field(name), "unknown setting")
    for name in _REQUIRED:
        if name not in table:
            raise ConfigError(_field(name), "required")
    for name in _STRINGS:
        if name in table and not isinstance(table[name], str):
            raise ConfigError(_field(name), "expected a string")
    allow = table.get("allow_plain_http", False)
    if not isinstance(allow, bool):
        raise ConfigError(_field("allow_plain_http"), "expected true or false")
    netns = table.get("netns")
    if netns is not None:
        try:
            netns_path(netns)
        except NetnsError as error:
            raise ConfigError(_field("netns"), str(error)) from None
    for name in ("token_file", "state_dir", "ca_file"):
        if name in table and not Path(table[name]).is_absolute():
            raise ConfigError(_field(name), "must be an absolute path")
    seconds = {name: _seconds(name, table[name]) for name in _SECONDS if name in table}
    urls = _check_urls(table, allow)
    config = AgentConfig(
        controller_url=urls[0],
        controller_urls=urls,
        gateway=_check_gateway(table["gateway"]),
        token_file=Path(table["token_file"]),
        state_dir=Path(table["state_dir"]),
        netns=netns,
        ca_file=Path(table["ca_file"]) if "ca_file" in table else None,
        allow_plain_http=allow,
        metrics_listen=_check_listen(table.get("metrics_listen", "127.0.0.1:9471")),
        **seconds,
    )
    if config.backoff_min > config.backoff_max:
        raise ConfigError(_field("backoff_max"), "must not be below backoff_min")
    return config


def load(path: Path) -> AgentConfig:
    """Read and check ``path``; the token file is checked too (it must be usable)."""
    try:
        document = read_toml(path)
    except TomlFileError as error:
        raise ConfigError("config", str(error)) from None
    config = parse(document)
    read_token(config.token_file)
    if config.ca_file is not None and not config.ca_file.is_file():
        raise ConfigError(_field("ca_file"), f"{config.ca_file} is not a readable file")
    return config


def read_token(path: Path) -> str:
    """The agent token, refusing a file others can read (it grants the agent role)."""
    name = _field("token_file")
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
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(name, f"{path} does not hold an ASCII token") from None
    if not token or any(c.isspace() for c in token) or len(token) > 256:
        raise ConfigError(name, f"{path} must hold exactly one token (one line, no spaces)")
    return token
