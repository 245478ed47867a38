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
    drift_interval = 0.1    # how often the ruleset generation is checked
    report_interval = 30.0  # a status report at least this often ...
    report_min_gap = 5.0    # ... and at most this often while revisions stream in
    request_timeout = 10.0  # connect/read allowance on top of poll_wait
    offenders_window = 900  # an offender stays reported this long after its last block
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgectl import tomlfile
from edgectl.agent.netns import NetnsError, netns_path
from edgectl.model.offenders import WINDOW_MAX
from edgectl.tomlfile import ConfigError, setting

__all__ = ["AgentConfig", "ConfigError", "load", "parse", "read_token"]

TABLE = "agent"
# The controller's gateway-name pattern (controller/api/models.py GatewayName).
_GATEWAY_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def _gateway(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if not value or len(value) > 64 or not set(value) <= _GATEWAY_CHARS or not value[0].isalnum():
        raise ValueError(f"{value!r} is not a gateway name ([a-z0-9_.-])")
    return value


def _netns(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    try:
        netns_path(value)
    except NetnsError as error:
        raise ValueError(str(error)) from None
    return value


def _listen(value: object) -> tuple[str, int] | None:
    if not isinstance(value, str):
        raise ValueError("expected a string like 127.0.0.1:9471")
    if value == "":
        return None
    host, colon, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return host, int(port_text)


def _seconds(default: float, low: float, high: float) -> Any:
    return setting(default, low=low, high=high, unit="seconds")


# More would only lengthen a fail-over pass; two or three processes is the design.
_URLS_MAX = 16


def _field(name: str) -> str:
    return f"{TABLE}.{name}"


def _url_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > _URLS_MAX:
        raise ValueError(f"expected a list of 1-{_URLS_MAX} URLs")
    for index, url in enumerate(value):
        if not isinstance(url, str):
            raise ConfigError(_field(f"controller_urls[{index}]"), "expected a string")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The ``[agent]`` table: each field's type, default and bounds, read by tomlfile."""

    gateway: str = setting(parse=_gateway)
    token_file: Path = setting(absolute=True)
    state_dir: Path = setting(absolute=True)
    # controller_url or controller_urls (one of them; parse() checks): after
    # parse(), controller_url is the first of controller_urls.
    controller_url: str = ""
    netns: str | None = setting(None, parse=_netns)
    ca_file: Path | None = setting(None, absolute=True)
    allow_plain_http: bool = False
    metrics_listen: tuple[str, int] | None = setting(("127.0.0.1", 9471), parse=_listen)
    poll_wait: float = _seconds(30.0, 0.0, 3600.0)
    backoff_min: float = _seconds(0.5, 0.01, 3600.0)
    backoff_max: float = _seconds(30.0, 0.01, 3600.0)
    # A check is one GETGEN round trip (~20 us of CPU): ten a second cost
    # 0.02 % of a core and bound how long a flushed table stays down.
    drift_interval: float = _seconds(0.1, 0.05, 4.0)
    report_interval: float = _seconds(30.0, 1.0, 3600.0)
    # Each report is a database write on the controller: with 50 gateways
    # and one report per change, reports cost the controller about as much
    # CPU as serving the changes (BENCHMARKS-agent.md).
    report_min_gap: float = _seconds(5.0, 0.0, 3600.0)
    request_timeout: float = _seconds(10.0, 0.5, 600.0)
    # Seconds an offender entry outlives its last log event (offenders.py);
    # up to what the controller takes (a day): entries are bounded in number
    # (10,000), not by the window.
    offenders_window: float = _seconds(900.0, 1.0, float(WINDOW_MAX))
    # Every controller to try, in order (controller_url alone: just it).
    controller_urls: tuple[str, ...] = setting((), parse=_url_list)

    @property
    def urls(self) -> tuple[str, ...]:
        return self.controller_urls or (self.controller_url,)


def _checked_urls(read: AgentConfig) -> tuple[str, ...]:
    """``controller_url`` or ``controller_urls`` (one of them), each checked."""
    if read.controller_url and read.controller_urls:
        raise ConfigError(
            _field("controller_urls"), "give controller_url or controller_urls, not both"
        )
    if not read.controller_url and not read.controller_urls:
        raise ConfigError(_field("controller_url"), "required (or controller_urls)")
    if read.controller_url:
        named = [("controller_url", read.controller_url)]
    else:
        named = [(f"controller_urls[{i}]", url) for i, url in enumerate(read.controller_urls)]
    urls: list[str] = []
    for name, url in named:
        checked = tomlfile.controller_url(url, read.allow_plain_http, _field(name))
        if checked in urls:
            raise ConfigError(_field(name), f"{url!r} is listed twice")
        urls.append(checked)
    return tuple(urls)


def parse(document: dict[str, Any]) -> AgentConfig:
    """An AgentConfig from a parsed TOML document (no file system checks)."""
    read = tomlfile.read_section(AgentConfig, document, TABLE)
    urls = _checked_urls(read)
    config = replace(read, controller_url=urls[0], controller_urls=urls)
    if config.backoff_min > config.backoff_max:
        raise ConfigError(_field("backoff_max"), "must not be below backoff_min")
    return config


def load(path: Path) -> AgentConfig:
    """Read and check ``path``; the token file is checked too (it must be usable)."""
    config = parse(tomlfile.read_document(path))
    read_token(config.token_file)
    if config.ca_file is not None and not config.ca_file.is_file():
        raise ConfigError(_field("ca_file"), f"{config.ca_file} is not a readable file")
    return config


def read_token(path: Path) -> str:
    """The agent token, refusing a file others can read (it grants the agent role)."""
    return tomlfile.read_token(path, _field("token_file"))
