"""Controller settings from a TOML file and the environment, refusing insecure values.

Precedence: built-in default < file (``[controller]`` table) < environment
(``EDGECTL_CONTROLLER_<FIELD>``).  Every value is checked once here so the rest of the
controller can trust it.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from edgectl.controller.errors import Invalid
from edgectl.controller.radius import config as radius_config
from edgectl.controller.radius.config import RadiusSettings
from edgectl.tomlfile import TomlFileError, read_toml

ENV_PREFIX = "EDGECTL_CONTROLLER_"
CONFIG_ENV = "EDGECTL_CONTROLLER_CONFIG"
DEFAULT_CONFIG = Path("/etc/edgectl/controller.toml")


@dataclass(frozen=True, slots=True)
class Settings:
    # SQLite path as a URL (sqlite:///relative or sqlite:////absolute) or a
    # postgresql+psycopg:// DSN to scale out to several controller processes.
    database_url: str = "sqlite:////var/lib/edgectl/controller.db"
    host: str = "127.0.0.1"
    port: int = 8470
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    # Plain HTTP on a non-loopback address sends bearer tokens in clear; only
    # allowed when a TLS-terminating proxy sits in front and says so here.
    allow_plain_http: bool = False
    migrate_on_start: bool = True
    # How often expired quarantines/exemptions are lifted without anyone asking.
    sweep_interval: float = 5.0
    # Removed entries are remembered this long so a returning agent gets a
    # delta; an agent away longer gets a snapshot.
    tombstone_retention: float = 7 * 24 * 3600.0
    # Long-poll: the longest wait a client may ask for, and how often a waiter
    # re-reads the revision in case another process made the change.
    max_wait: float = 300.0
    poll_interval: float = 1.0
    log_level: str = "info"
    # What one client may cost before it has proved anything (the controller
    # may face the network directly).  A body over max_body_bytes is refused
    # with 413 (at once when Content-Length says so), and a body is read only
    # after its bearer token checks out.  16 MiB: POST /v1/sessions/bulk with
    # its cap of 50,000 bindings is 5.3 MB with 30-character RADIUS user names
    # and 16.3 MB with the longest (200-character) account ids, indented.
    max_body_bytes: int = 16 * 1024 * 1024
    # A request's headers must arrive within header_timeout of its first byte
    # (or of the connection), its body within body_timeout of the headers
    # (16 MiB in 60 s is 2.2 Mbit/s); a slow or stalled sender is cut off.
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    # Idle time between requests on a kept-alive connection.
    keep_alive_timeout: int = 5
    # Open connections (and requests in progress) before new requests get 503:
    # every agent holds one long-poll, so keep it above the fleet's gateways
    # plus operators and scrapers.
    max_connections: int = 1000
    # Session history: intervals that ended longer ago than this are deleted
    # by the sweeper (an abuse report older than this can no longer be
    # attributed).  400 days: a year of reports plus a month of slack.
    session_retention_days: int = 400
    # A NAS session with no event (Start, Interim, Stop) for this many seconds
    # is unbound; 0 never unbinds.  Off by default: the right value depends on
    # the NAS's Acct-Interim-Interval, which the controller cannot know, and a
    # value too short unbinds live sessions - a quarantined account would then
    # escape its hold until it logs in again.  Set it to about three interim
    # intervals (e.g. 3 x 300 s + slack = 1000).  REST bindings never go stale.
    stale_session_after: float = 0.0
    # Serve /docs and /redoc (assets from the package, never a CDN); false
    # removes both.  /openapi.json stays: it is data, not code.
    docs: bool = True
    # The web console's sign-in sessions: ended after this long without a
    # request (idle), and this long after sign-in whatever happens (absolute),
    # as OWASP's session guidance has it for a tool that can cut customers off.
    console_idle_timeout: float = 30 * 60.0
    console_absolute_timeout: float = 12 * 3600.0
    # The escalation engine: how often it turns new reports and offenders into
    # strikes (one leader among controllers sharing PostgreSQL), and the
    # brakes on automatic holds per sliding hour, fleet-wide and per pool.
    # Past a cap, actions become proposals for an analyst, with one alert.
    escalation_interval: float = 5.0
    escalation_fleet_per_hour: int = 100
    escalation_pool_per_hour: int = 20
    # Self-release from the notice portal (PacketFence's limits): at most
    # this many per account in the window, then staff must lift; after one,
    # the same category (else reason) may not hold the account again within
    # the grace period (ignore_grace on the hold overrides); and the one-time
    # code shown on the notice works this long.
    self_release_limit: int = 3
    self_release_window_days: int = 30
    self_release_grace_hours: int = 24
    portal_code_seconds: int = 900
    # The RADIUS accounting feed ([controller.radius]); None = not listening.
    # Read from the file only: its clients file holds the shared secrets.
    radius: RadiusSettings | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _coerce(name: str, kind: Any, value: object) -> object:
    text_kind = str(kind)
    if isinstance(value, str) and "bool" in text_kind:
        if value.lower() not in _BOOLS:
            raise Invalid(name, f"{value!r} is not true or false")
        return _BOOLS[value.lower()]
    if isinstance(value, str) and text_kind in ("int", "float"):
        try:
            return int(value) if text_kind == "int" else float(value)
        except ValueError:
            raise Invalid(name, f"{value!r} is not a number") from None
    if "bool" in text_kind and not isinstance(value, bool):
        raise Invalid(name, "expected true or false")
    if text_kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise Invalid(name, "expected an integer")
    if text_kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(name, "expected a number")
        return float(value)
    if text_kind.startswith("str") and not isinstance(value, str):
        raise Invalid(name, "expected a string")
    return value


def _has_password(url: str) -> bool:
    head = url.partition("://")[2].partition("@")
    return (bool(head[1]) and ":" in head[0]) or "password=" in url


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``path`` (or $EDGECTL_CONTROLLER_CONFIG, or the default file if present)."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    elif path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    values: dict[str, object] = {}
    kinds = {f.name: f.type for f in fields(Settings)}
    if path is not None:
        try:
            document = read_toml(path)
        except TomlFileError as error:
            raise Invalid("config", str(error)) from None
        table = document.get("controller", {})
        if not isinstance(table, dict):
            raise Invalid("controller", "expected a table")
        for name, value in table.items():
            if name not in kinds:
                raise Invalid(f"controller.{name}", "unknown setting")
            if name == "radius":
                values[name] = radius_config.parse(value)
                continue
            values[name] = _coerce(f"controller.{name}", kinds[name], value)
        url = values.get("database_url")
        if isinstance(url, str) and _has_password(url) and path.stat().st_mode & stat.S_IROTH:
            raise Invalid(
                "controller.database_url",
                f"{path} holds a database password and is world-readable; chmod o-r it",
            )
    for name, kind in kinds.items():
        if name == "radius":
            continue  # a table, not a value
        text = env.get(ENV_PREFIX + name.upper())
        if text is not None:
            values[name] = _coerce(ENV_PREFIX + name.upper(), kind, text)
    return check(replace(Settings(), **values))  # type: ignore[arg-type]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(settings: Settings) -> Settings:
    if not (
        settings.database_url.startswith("sqlite:///")
        or settings.database_url.startswith("postgresql")
    ):
        raise Invalid("database_url", "must be sqlite:///PATH or a postgresql+psycopg:// DSN")
    if settings.database_url in ("sqlite://", "sqlite:///:memory:"):
        raise Invalid("database_url", "an in-memory database loses every quarantine on restart")
    if not 0 < settings.port < 65536:
        raise Invalid("port", "must be 1..65535")
    if (settings.tls_certfile is None) != (settings.tls_keyfile is None):
        raise Invalid("tls_keyfile", "TLS needs both tls_certfile and tls_keyfile")
    if (
        not _loopback(settings.host)
        and settings.tls_certfile is None
        and not settings.allow_plain_http
    ):
        raise Invalid(
            "host",
            f"listening on {settings.host} without TLS would send bearer tokens in clear; "
            "set tls_certfile/tls_keyfile, or allow_plain_http behind a TLS proxy",
        )
    for name in ("sweep_interval", "poll_interval", "escalation_interval"):
        if not 0.01 <= getattr(settings, name) <= 3600:
            raise Invalid(name, "must be between 0.01 and 3600 seconds")
    if not 0 <= settings.max_wait <= 3600:
        raise Invalid("max_wait", "must be between 0 and 3600 seconds")
    if settings.tombstone_retention < 60:
        raise Invalid("tombstone_retention", "must be at least 60 seconds")
    if not 1 <= settings.session_retention_days <= 36_500:
        raise Invalid("session_retention_days", "must be between 1 and 36500 days")
    stale = settings.stale_session_after
    if stale != 0 and not 60 <= stale <= 30 * 86_400:
        raise Invalid("stale_session_after", "must be 0 (off) or between 60 and 2592000 seconds")
    if not 1024 <= settings.max_body_bytes <= 1 << 30:
        raise Invalid("max_body_bytes", "must be between 1024 and 1073741824 bytes")
    for name in ("header_timeout", "body_timeout"):
        if not 0.1 <= getattr(settings, name) <= 3600:
            raise Invalid(name, "must be between 0.1 and 3600 seconds")
    if not 1 <= settings.keep_alive_timeout <= 3600:
        raise Invalid("keep_alive_timeout", "must be between 1 and 3600 seconds")
    if not 60 <= settings.console_idle_timeout <= 86_400:
        raise Invalid("console_idle_timeout", "must be between 60 and 86400 seconds")
    if not settings.console_idle_timeout <= settings.console_absolute_timeout <= 7 * 86_400:
        raise Invalid(
            "console_absolute_timeout",
            "must be at least console_idle_timeout and at most 604800 seconds",
        )
    if not 1 <= settings.max_connections <= 1_000_000:
        raise Invalid("max_connections", "must be between 1 and 1000000")
    for name in ("escalation_fleet_per_hour", "escalation_pool_per_hour"):
        if not 0 <= getattr(settings, name) <= 1_000_000:
            raise Invalid(name, "must be between 0 (every action a proposal) and 1000000")
    for name, low, high in (
        ("self_release_limit", 0, 1000),
        ("self_release_window_days", 1, 3650),
        ("self_release_grace_hours", 0, 24 * 3650),
        ("portal_code_seconds", 30, 86_400),
    ):
        if not low <= getattr(settings, name) <= high:
            raise Invalid(name, f"must be between {low} and {high}")
    if settings.log_level not in ("critical", "error", "warning", "info", "debug"):
        raise Invalid("log_level", "must be one of critical, error, warning, info, debug")
    return settings
