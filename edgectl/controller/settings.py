"""Controller settings from a TOML file and the environment, refusing insecure values.

Precedence: built-in default < file (``[controller]`` table) < environment
(``EDGECTL_CONTROLLER_<FIELD>``).  Each field declares its type, default and bounds
(``setting``); edgectl/tomlfile.py reads and checks them, so the rest of the
controller can trust every value.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from edgectl.controller.errors import Invalid
from edgectl.controller.radius import config as radius_config
from edgectl.controller.radius.config import RadiusSettings
from edgectl.tomlfile import (
    ConfigError,
    check_bounds,
    is_loopback,
    read_document,
    read_environment,
    read_table,
    setting,
)

TABLE = "controller"
ENV_PREFIX = "EDGECTL_CONTROLLER_"
CONFIG_ENV = "EDGECTL_CONTROLLER_CONFIG"
DEFAULT_CONFIG = Path("/etc/edgectl/controller.toml")


@dataclass(frozen=True, slots=True)
class Settings:
    # SQLite path as a URL (sqlite:///relative or sqlite:////absolute) or a
    # postgresql+psycopg:// DSN to scale out to several controller processes.
    database_url: str = "sqlite:////var/lib/edgectl/controller.db"
    host: str = "127.0.0.1"
    port: int = setting(8470, low=1, high=65535)
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    # Plain HTTP on a non-loopback address sends bearer tokens in clear; only
    # allowed when a TLS-terminating proxy sits in front and says so here.
    allow_plain_http: bool = False
    migrate_on_start: bool = True
    # How often expired quarantines/exemptions are lifted without anyone asking.
    sweep_interval: float = setting(5.0, low=0.01, high=3600, unit="seconds")
    # Removed entries are remembered this long so a returning agent gets a
    # delta; an agent away longer gets a snapshot.
    tombstone_retention: float = setting(7 * 24 * 3600.0, low=60, unit="seconds")
    # Long-poll: the longest wait a client may ask for, and how often a waiter
    # re-reads the revision in case another process made the change.
    max_wait: float = setting(300.0, low=0, high=3600, unit="seconds")
    poll_interval: float = setting(1.0, low=0.01, high=3600, unit="seconds")
    log_level: str = setting("info", choices=("critical", "error", "warning", "info", "debug"))
    # What one client may cost before it has proved anything (the controller
    # may face the network directly).  A body over max_body_bytes is refused
    # with 413 (at once when Content-Length says so), and a body is read only
    # after its bearer token checks out.  16 MiB: POST /v1/sessions/bulk with
    # its cap of 50,000 bindings is 5.3 MB with 30-character RADIUS user names
    # and 16.3 MB with the longest (200-character) account ids, indented.
    max_body_bytes: int = setting(16 * 1024 * 1024, low=1024, high=1 << 30, unit="bytes")
    # A request's headers must arrive within header_timeout of its first byte
    # (or of the connection), its body within body_timeout of the headers
    # (16 MiB in 60 s is 2.2 Mbit/s); a slow or stalled sender is cut off.
    header_timeout: float = setting(10.0, low=0.1, high=3600, unit="seconds")
    body_timeout: float = setting(60.0, low=0.1, high=3600, unit="seconds")
    # Idle time between requests on a kept-alive connection.
    keep_alive_timeout: int = setting(5, low=1, high=3600, unit="seconds")
    # Open connections (and requests in progress) before new requests get 503:
    # every agent holds one long-poll, so keep it above the fleet's gateways
    # plus operators and scrapers.
    max_connections: int = setting(1000, low=1, high=1_000_000)
    # Session history: intervals that ended longer ago than this are deleted
    # by the sweeper (an abuse report older than this can no longer be
    # attributed).  400 days: a year of reports plus a month of slack.
    session_retention_days: int = setting(400, low=1, high=36_500, unit="days")
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
    console_idle_timeout: float = setting(30 * 60.0, low=60, high=86_400, unit="seconds")
    console_absolute_timeout: float = 12 * 3600.0
    # The escalation engine: how often it turns new reports and offenders into
    # strikes (one leader among controllers sharing PostgreSQL), and the
    # brakes on automatic holds per sliding hour, fleet-wide and per pool.
    # Past a cap, actions become proposals for an analyst, with one alert.
    escalation_interval: float = setting(5.0, low=0.01, high=3600, unit="seconds")
    # 0: every action a proposal.
    escalation_fleet_per_hour: int = setting(100, low=0, high=1_000_000)
    escalation_pool_per_hour: int = setting(20, low=0, high=1_000_000)
    # Self-release from the notice portal (PacketFence's limits): at most
    # this many per account in the window, then staff must lift; after one,
    # the same category (else reason) may not hold the account again within
    # the grace period (ignore_grace on the hold overrides); and the one-time
    # code shown on the notice works this long.
    self_release_limit: int = setting(3, low=0, high=1000)
    self_release_window_days: int = setting(30, low=1, high=3650, unit="days")
    self_release_grace_hours: int = setting(24, low=0, high=24 * 3650, unit="hours")
    portal_code_seconds: int = setting(900, low=30, high=86_400, unit="seconds")
    # The RADIUS accounting feed ([controller.radius]); None = not listening.
    # Read from the file only: its clients file holds the shared secrets.
    radius: RadiusSettings | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


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
    try:
        if path is not None:
            table = read_document(path).get(TABLE, {})
            if not isinstance(table, dict):
                raise ConfigError(TABLE, "expected a table")
            radius = table.pop("radius", None)
            values.update(read_table(Settings, table, TABLE))
            if radius is not None:
                values["radius"] = radius_config.parse(radius)
            url = values.get("database_url")
            if isinstance(url, str) and _has_password(url) and path.stat().st_mode & stat.S_IROTH:
                raise ConfigError(
                    f"{TABLE}.database_url",
                    f"{path} holds a database password and is world-readable; chmod o-r it",
                )
        # The radius table is read from the file only: its clients file holds secrets.
        values.update(read_environment(Settings, env, ENV_PREFIX, skip=("radius",)))
    except ConfigError as error:
        raise Invalid(error.field, error.reason) from None
    return check(replace(Settings(), **values))  # type: ignore[arg-type]


def check(settings: Settings) -> Settings:
    """The declared bounds, then what relates one setting to another."""
    try:
        check_bounds(settings)
    except ConfigError as error:
        raise Invalid(error.field, error.reason) from None
    if not (
        settings.database_url.startswith("sqlite:///")
        or settings.database_url.startswith("postgresql")
    ):
        raise Invalid("database_url", "must be sqlite:///PATH or a postgresql+psycopg:// DSN")
    if settings.database_url in ("sqlite://", "sqlite:///:memory:"):
        raise Invalid("database_url", "an in-memory database loses every quarantine on restart")
    if (settings.tls_certfile is None) != (settings.tls_keyfile is None):
        raise Invalid("tls_keyfile", "TLS needs both tls_certfile and tls_keyfile")
    if (
        not is_loopback(settings.host)
        and settings.tls_certfile is None
        and not settings.allow_plain_http
    ):
        raise Invalid(
            "host",
            f"listening on {settings.host} without TLS would send bearer tokens in clear; "
            "set tls_certfile/tls_keyfile, or allow_plain_http behind a TLS proxy",
        )
    stale = settings.stale_session_after
    if stale != 0 and not 60 <= stale <= 30 * 86_400:
        raise Invalid("stale_session_after", "must be 0 (off) or between 60 and 2592000 seconds")
    if not settings.console_idle_timeout <= settings.console_absolute_timeout <= 7 * 86_400:
        raise Invalid(
            "console_absolute_timeout",
            "must be at least console_idle_timeout and at most 604800 seconds",
        )
    return settings
