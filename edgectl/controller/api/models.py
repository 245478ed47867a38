"""Request and response bodies: a Create, an Update and a Public model per resource.

Pydantic checks shapes; the model (``edgectl.model``) checks meaning, so
these stay thin and the two never disagree about what a pool is.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic import Strict as StrictType

from edgectl.controller.ids import ACCOUNT_PATTERN
from edgectl.model import BlockAction, Hook, PoolKind, QuarantineMode
from edgectl.model.offenders import MAX_REPORTED, REASON_MAX, WINDOW_MAX, OffenderKind


def _printable(value: str) -> str:
    # Tickets and account ids end up in logs and nft comments; PostgreSQL
    # also refuses NUL and lone surrogates, which would otherwise be a 500.
    if not value.isprintable():
        raise ValueError("must be printable text")
    return value


def _prose(value: str) -> str:
    """Free text may span lines, but no other control characters."""
    for char in value:
        if char not in "\n\t" and unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn"):
            raise ValueError("must be text without control characters")
    return value


def _utc(value: datetime) -> datetime:
    try:
        converted = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None
    if converted.year >= 9000:
        raise ValueError("time out of range")
    return converted


def _time_text(value: object) -> object:
    # Lax datetime parsing (below) would also read 1700000000 as a Unix time:
    # in a request body a time is an RFC 3339 string and nothing else.
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time string, such as 2026-12-01T00:00:00Z")
    return value


# Request models are strict (see ``Strict``), but FastAPI validates the parsed
# JSON as Python objects, where strict mode wants datetime and enum instances.
# These two kinds are the ones JSON can only send as strings, so they (and
# only they) parse strings: a time from RFC 3339 text, an enum from its value.
Instant = Annotated[
    AwareDatetime, StrictType(False), BeforeValidator(_time_text), AfterValidator(_utc)
]
PoolKindIn = Annotated[PoolKind, StrictType(False)]
HookIn = Annotated[Hook, StrictType(False)]
BlockActionIn = Annotated[BlockAction, StrictType(False)]
ModeIn = Annotated[QuarantineMode, StrictType(False)]
Name = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]{0,31}$")]
GatewayName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
]
Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
# The account id alphabet (edgectl.controller.ids), used by every route that
# takes an account (bodies, the {account} path, the ?account= filters), so an
# id accepted anywhere is reachable at /v1/accounts/{account}.
AccountId = Annotated[str, Field(min_length=1, max_length=200, pattern=ACCOUNT_PATTERN)]
Reason = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_prose)]
PrefixText = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9A-Fa-f.:/]+$")]
Prefixes = Annotated[list[PrefixText], Field(min_length=1, max_length=1024)]
Port = Annotated[int, Field(ge=1, le=65535)]
# Ten years: a longer hold is a mistake or a "forever" that should say so.
Duration = Annotated[int, Field(ge=1, le=10 * 366 * 24 * 3600)]


class Strict(BaseModel):
    """Request bodies: no unknown fields, and JSON types as sent ("3600" is not
    a number, 5.0 not an integer, "yes" not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# Pools ---------------------------------------------------------------------


class PoolUpdate(Strict):
    kind: PoolKindIn
    prefixes: Prefixes
    subscriber_prefix_len: Annotated[int, Field(ge=0, le=128)] | None = None
    rate_limit: Name | None = None
    op25b_shadow: bool = False


class PoolCreate(PoolUpdate):
    name: Name


class PoolPublic(BaseModel):
    name: str
    kind: PoolKind
    prefixes: list[str]
    subscriber_prefix_len: int | None = None
    rate_limit: str | None = None
    op25b_shadow: bool
    gateways: list[str]


# Relays --------------------------------------------------------------------


class RelayUpdate(Strict):
    prefixes: Prefixes


class RelayCreate(RelayUpdate):
    name: Name


class RelayPublic(BaseModel):
    name: str
    prefixes: list[str]


# Rate-limit profiles ---------------------------------------------------------


class RateLimitUpdate(Strict):
    new_per_minute: Annotated[int, Field(ge=1, le=1_000_000)]
    burst: Annotated[int, Field(ge=1, le=1_000_000)]
    concurrent: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    per_destination: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    shadow: bool = False


class RateLimitCreate(RateLimitUpdate):
    name: Name


class RateLimitPublic(BaseModel):
    name: str
    new_per_minute: int
    burst: int
    concurrent: int | None = None
    per_destination: int | None = None
    shadow: bool


# Gateways --------------------------------------------------------------------


class GardenDestinationIn(Strict):
    prefix: PrefixText
    ports: Annotated[list[Port], Field(min_length=1, max_length=16)] | None = None


class GatewaySettingsIn(Strict):
    """The model's gateway settings (``GatewaySettings``), field for field;
    omitted fields take the model's defaults.  A test keeps the two in step."""

    hooks: Annotated[list[HookIn], Field(max_length=2)] | None = None
    block_action: BlockActionIn | None = None
    mail_ports: Annotated[list[Port], Field(max_length=64)] | None = None
    op25b_ports: Annotated[list[Port], Field(max_length=64)] | None = None
    log_group: Annotated[int, Field(ge=0, le=65535)] | None = None
    log_per_second: Annotated[int, Field(ge=1, le=10_000)] | None = None
    resolvers: Annotated[list[PrefixText], Field(max_length=64)] | None = None
    portal: Annotated[list[PrefixText], Field(max_length=64)] | None = None
    meter_size: Annotated[int, Field(ge=1024, le=16_777_216)] | None = None
    track_non_mail: bool | None = None
    steer_http_4: PrefixText | None = None
    steer_http_6: PrefixText | None = None
    steer_http_port: Port | None = None
    garden_allow: Annotated[list[GardenDestinationIn], Field(max_length=256)] | None = None


class GatewayCreate(Strict):
    name: GatewayName
    settings: GatewaySettingsIn = Field(default_factory=GatewaySettingsIn)
    pools: Annotated[list[Name], Field(max_length=256)] = Field(default_factory=list)


class GatewayUpdate(Strict):
    settings: GatewaySettingsIn | None = None
    pools: Annotated[list[Name], Field(max_length=256)] | None = None


class GatewayStatusPublic(BaseModel):
    applied_revision: int
    reported_at: datetime
    detail: dict[str, Any]


class Convergence(BaseModel):
    wanted_revision: int
    applied_revision: int | None = Field(description="null until the agent first reports")
    converged: bool
    last_seen: datetime | None = Field(description="when the agent last reported")
    seconds_since_seen: float | None
    lag_seconds: float | None = Field(
        description="seconds since the controller first wanted a revision the gateway has "
        "not applied; null when converged"
    )


class OffendersSummary(BaseModel):
    available: bool
    reason: str | None
    window_seconds: int
    count: int = Field(description="entries in the gateway's latest offenders report")
    reported_at: datetime


class GatewayPublic(BaseModel):
    name: str
    settings: dict[str, Any]
    pools: list[str]
    revision: int
    status: GatewayStatusPublic | None
    converged: bool
    convergence: Convergence
    offenders: OffendersSummary | None = Field(
        description="null until the agent reports offenders (older agents never do)"
    )


class GatewayCreated(GatewayPublic):
    agent_token: str = Field(description="Shown once; only its hash is stored")


class AgentToken(BaseModel):
    agent_token: str


PolicyText = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]


class OffenderIn(Strict):
    key: PrefixText = Field(description="IPv4 address (/32) or IPv6 subscriber prefix (/32../64)")
    kind: OffenderKind
    policy: PolicyText = Field(description="profile name, pool name or quarantine mode")
    shadow: bool
    # 2**40: far above what a block log limited to 10,000 lines a second can
    # count in a day, and a sum over many gateways stays inside a BIGINT.
    count: Annotated[int, Field(ge=1, le=2**40)]
    first_seen: Instant
    last_seen: Instant


class OffendersIn(Strict):
    available: bool
    reason: (
        Annotated[str, Field(min_length=1, max_length=REASON_MAX), AfterValidator(_prose)] | None
    ) = None
    window_seconds: Annotated[int, Field(ge=1, le=WINDOW_MAX)]
    entries: Annotated[list[OffenderIn], Field(max_length=MAX_REPORTED)] = Field(
        default_factory=list
    )


def _encodable(value: dict[str, Any]) -> dict[str, Any]:
    # JSON may carry lone surrogates ("\ud800"); stored, they would make every
    # later answer that shows the detail fail to encode (a 500 for good).
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (a lone surrogate?)") from None
    return value


class StatusReport(Strict):
    applied_revision: Annotated[int, Field(ge=0, le=2**63 - 1)]
    detail: Annotated[dict[str, Any], AfterValidator(_encodable)] = Field(default_factory=dict)
    offenders: OffendersIn | None = Field(
        default=None, description="replaces the gateway's stored offenders; omitted: kept"
    )


class OffenderPublic(BaseModel):
    key: str
    kind: OffenderKind
    policy: str
    shadow: bool = Field(description="counted only, not refused (a separate row from refusals)")
    count: int
    first_seen: datetime
    last_seen: datetime
    gateways: list[str]
    account: str | None = Field(description="whose current session holds the key")


class DesiredStateEnvelope(BaseModel):
    """``state`` is the model's ``state_to_data``; ``delta`` its ``delta_to_data``."""

    kind: Literal["snapshot", "delta"]
    revision: int
    # The store's epoch: send it back with the revision (``epoch`` query).
    epoch: str | None = None
    state: dict[str, Any] | None = None
    delta: dict[str, Any] | None = None


# Accounts and sessions -----------------------------------------------------------


class SessionPut(Strict):
    """The account's addresses now; an omitted family means it has none."""

    ipv4: PrefixText | None = None
    ipv6: PrefixText | None = None


class BindingIn(SessionPut):
    account: AccountId


class BulkSessions(Strict):
    bindings: Annotated[list[BindingIn], Field(min_length=1, max_length=50_000)]


class BulkResult(BaseModel):
    bindings: int
    moved: int
    displaced: int


class SessionPublic(BaseModel):
    ipv4: str | None
    ipv6: str | None
    updated_at: datetime


# Quarantines and exemptions ---------------------------------------------------------


class Expiring(Strict):
    expires: Instant | None = None
    duration: Duration | None = Field(default=None, description="seconds from now")

    @model_validator(mode="after")
    def _one_expiry(self) -> Expiring:
        if self.expires is not None and self.duration is not None:
            raise ValueError("give expires or duration, not both")
        return self


class QuarantineCreate(Expiring):
    account: AccountId | None = None
    prefix: PrefixText | None = Field(default=None, description="for unassigned space")
    address: PrefixText | None = Field(
        default=None,
        description="quarantine the account that held this address at `at` (session history)",
    )
    at: Instant | None = Field(default=None, description="with `address`: when; default now")
    mode: ModeIn
    reason: Reason
    ticket: Text | None = None
    category: Name | None = Field(
        default=None, description="the operator's category: the notice portal shows its text"
    )
    self_release: bool | None = Field(
        default=None,
        description="may the subscriber lift it from the notice portal (default: the mode's "
        "policy, yes for walled-garden; never for smtp or block)",
    )
    ignore_grace: bool = Field(
        default=False, description="hold even within the grace period after a self-release"
    )

    @model_validator(mode="after")
    def _one_target(self) -> QuarantineCreate:
        given = [self.account, self.prefix, self.address]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of account, prefix or address")
        if self.at is not None and self.address is None:
            raise ValueError("at is only for address: when the address was held")
        return self


class QuarantinePublic(BaseModel):
    id: int
    account: str | None
    prefix: str | None
    mode: QuarantineMode
    reason: str
    ticket: str | None
    actor: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    state: Literal["active", "expired", "lifted"]
    ended_at: datetime | None
    ended_by: str | None
    end_reason: str | None
    category: str | None
    self_release: bool


class Resolved(BaseModel):
    """How an address (and time) was resolved to the account that held it."""

    address: str
    at: datetime
    account: str
    held: str = Field(description="the IPv4 address or delegated IPv6 prefix the account held")
    started: datetime
    ended: datetime | None
    source: str
    session_id: str | None


class QuarantineOutcome(BaseModel):
    outcome: Literal["created", "updated"]
    quarantine: QuarantinePublic
    resolved: Resolved | None = None


class Lift(Strict):
    reason: Reason


class ExemptionCreate(Expiring):
    account: AccountId
    ticket: Text
    reason: Reason


class ExemptionPublic(BaseModel):
    id: int
    account: str
    ticket: str
    reason: str
    actor: str
    created_at: datetime
    expires_at: datetime | None
    state: Literal["active", "expired", "lifted"]
    ended_at: datetime | None
    ended_by: str | None
    end_reason: str | None


class AccountPublic(BaseModel):
    account: str
    session: SessionPublic | None
    quarantine: QuarantinePublic | None
    exemption: ExemptionPublic | None


class Interval(BaseModel):
    """One binding: an address held from ``started`` (inclusive) to ``ended``
    (exclusive; null while held)."""

    address: str
    started: datetime
    ended: datetime | None
    source: str = Field(description="NAS name, or api:<actor> for the REST routes")
    session_id: str | None


class AccountHolder(BaseModel):
    account: str
    session: SessionPublic | None = Field(description="what the account holds now")
    interval: Interval | None = Field(description="the binding that matched the address")


class SessionInterval(Interval):
    last_seen: datetime


class AccountHistory(BaseModel):
    account: str
    session: SessionPublic | None
    sessions: list[SessionInterval] = Field(description="bindings, newest first (up to 1000)")
    quarantines: list[QuarantinePublic]
    exemptions: list[ExemptionPublic]
    notices: list[NoticePublic] = Field(
        description="the notice portal's log: shown, acknowledged, released (up to 1000)"
    )


class NoticePublic(BaseModel):
    at: datetime
    kind: Literal["shown", "reminded", "acknowledged", "released"]
    quarantine: int
    address: str
    language: str | None
    host: str | None
    grace_until: datetime | None


# The notice portal (role portal) -------------------------------------------------


class PortalHoldPublic(BaseModel):
    """An account's active hold as the notice portal shows it: no analyst's reason."""

    id: int
    account: str | None = Field(description="null: a hold placed on an address, not an account")
    mode: QuarantineMode
    category: str | None
    ticket: str | None
    created_at: datetime
    expires_at: datetime | None
    self_release: bool
    releases_used: int
    releases_left: int
    window_days: int
    acknowledged_at: datetime | None


Language = Annotated[
    str, Field(min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})?$")
]
HostText = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_printable)]


class NoticeShown(Strict):
    address: PrefixText = Field(description="the request's source address, as the portal saw it")
    language: Language | None = None
    host: HostText | None = Field(default=None, description="the Host the subscriber asked for")
    full: bool = Field(
        default=False,
        description="the whole notice with a code even when the hold is acknowledged "
        "(else an acknowledged hold's page is a reminder)",
    )


class NoticeCode(BaseModel):
    hold: PortalHoldPublic
    reminder: bool = Field(
        description="the hold is acknowledged: show a short reminder, not the notice"
    )
    code: str | None = Field(description="the one-time code to show on the page (not reminders)")
    code_expires_at: datetime | None


NOTICE_BATCH = 256  # notices in one portal request: one transaction's worth


class NoticesShown(Strict):
    notices: Annotated[list[NoticeShown], Field(min_length=1, max_length=NOTICE_BATCH)]


class NoticeCodes(BaseModel):
    answers: list[NoticeCode | None] = Field(
        description="per notice, in order: its hold and code, or null (not held)"
    )


class Acknowledge(Strict):
    address: PrefixText
    code: Annotated[str, Field(min_length=1, max_length=32)]
    release: bool = False


class Acknowledged(BaseModel):
    acknowledged: bool
    released: bool
    releases_left: int


# Audit ------------------------------------------------------------------------------


class AuditPublic(BaseModel):
    id: int
    seq: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    before: Any
    after: Any
    reason: str | None


class QuarantineBulk(Expiring):
    accounts: Annotated[list[AccountId], Field(min_length=1, max_length=100_000)]
    mode: ModeIn
    reason: Reason
    ticket: Text | None = None
    category: Name | None = None
    self_release: bool | None = None
    ignore_grace: bool = False


class BulkOutcome(BaseModel):
    created: int
    updated: int


# Path parameters: malformed names are 422 before they reach a query (a NUL
# in a path would otherwise reach PostgreSQL, which refuses it).

PathName = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]{0,31}$")]
PathGateway = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
]
PathAccount = Annotated[str, Path(min_length=1, max_length=200, pattern=ACCOUNT_PATTERN)]
