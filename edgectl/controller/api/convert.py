"""Request bodies -> model values, with the model's errors re-rooted at the body field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from edgectl.controller.api import models
from edgectl.controller.errors import Invalid
from edgectl.controller.ids import ACCOUNT_RULE, is_account
from edgectl.controller.store.offenders import Offender, OffenderReport
from edgectl.controller.store.subscribers import Binding
from edgectl.model import GatewaySettings, ModelError, Pool, Prefix, RateLimitProfile, Relay
from edgectl.model.serial import settings_from_data

T = TypeVar("T")


def model(build: Callable[[], T], under: str = "") -> T:
    try:
        return build()
    except ModelError as error:
        located = error.under(under) if under else error
        raise Invalid(located.path, located.reason) from None


def prefixes(texts: list[str], path: str) -> tuple[Prefix, ...]:
    return tuple(prefix_at(text, f"{path}[{i}]") for i, text in enumerate(texts))


def prefix_at(text: str, path: str) -> Prefix:
    # Prefix.parse lets NUL and surrogates escape as ValueError and reads
    # non-ASCII digits as a length: only hand it the characters a prefix has.
    if not text.isascii() or not _PREFIX_CHARS.issuperset(text):
        raise Invalid(path, f"{text!r} is not an IPv4 or IPv6 address or prefix")
    return model(lambda: Prefix.parse(text, path=path))


_PREFIX_CHARS = frozenset("0123456789abcdefABCDEF.:/")


def prefix(text: str | None, path: str) -> Prefix | None:
    return None if text is None else prefix_at(text, path)


def pool(name: str, body: models.PoolUpdate) -> Pool:
    parsed = prefixes(body.prefixes, "prefixes")
    return model(
        lambda: Pool(
            name=name,
            kind=body.kind,
            prefixes=parsed,
            subscriber_prefix_len=body.subscriber_prefix_len,
            rate_limit=body.rate_limit,
            op25b_shadow=body.op25b_shadow,
        )
    )


def relay(name: str, body: models.RelayUpdate) -> Relay:
    parsed = prefixes(body.prefixes, "prefixes")
    return model(lambda: Relay(name=name, prefixes=parsed))


def profile(name: str, body: models.RateLimitUpdate) -> RateLimitProfile:
    return model(lambda: RateLimitProfile(name=name, **body.model_dump()))


def settings(body: models.GatewaySettingsIn) -> GatewaySettings:
    data = body.model_dump(exclude_none=True, mode="json")
    return model(lambda: settings_from_data(data, "settings"))


def binding(account: str, body: models.SessionPut, path: str = "") -> Binding:
    model(lambda: _check_account(account, f"{path}account" if path else "account"))
    return Binding(
        account=account,
        ipv4=prefix(body.ipv4, f"{path}ipv4"),
        ipv6=prefix(body.ipv6, f"{path}ipv6"),
    )


def _check_account(account: str, path: str) -> None:
    # The request models already refused it; this keeps any other caller honest.
    if not is_account(account):
        raise ModelError(path, ACCOUNT_RULE)


def account(text: str, path: str = "account") -> str:
    model(lambda: _check_account(text, path))
    return text


def instant(text: str, path: str) -> datetime:
    """An RFC 3339 time with a time zone (a query parameter: bodies use models.Instant)."""
    parsed = None
    if text.isascii() and len(text) >= 20 and text[10] in "Tt ":
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Invalid(path, f"{text!r} is not an RFC 3339 time such as 2026-12-01T03:14:00Z")
    try:
        converted = parsed.astimezone(UTC)
    except OverflowError:
        raise Invalid(path, "time out of range") from None
    if converted.year >= 9000:
        raise Invalid(path, "time out of range")
    return converted


def expiry(body: models.Expiring, now: datetime) -> datetime | None:
    if body.duration is not None:
        return now + timedelta(seconds=body.duration)
    return body.expires


def offenders(body: models.OffendersIn, path: str = "offenders") -> OffenderReport:
    seen: dict[tuple[Prefix, str, str, bool], int] = {}
    entries = []
    for index, item in enumerate(body.entries):
        where = f"{path}.entries[{index}]"
        key = prefix_at(item.key, f"{where}.key")
        problem = _key_problem(key)
        if problem is not None:
            raise Invalid(f"{where}.key", problem)
        if item.first_seen > item.last_seen:
            raise Invalid(f"{where}.first_seen", "is after last_seen")
        slot = (key, item.kind, item.policy, item.shadow)
        if slot in seen:
            raise Invalid(
                where, f"repeats entries[{seen[slot]}] (same key, kind, policy and shadow)"
            )
        seen[slot] = index
        entries.append(
            Offender(
                key=key,
                kind=item.kind,
                policy=item.policy,
                shadow=item.shadow,
                count=item.count,
                first_seen=item.first_seen,
                last_seen=item.last_seen,
            )
        )
    return OffenderReport(body.available, body.reason, body.window_seconds, tuple(entries))


def _key_problem(key: Prefix) -> str | None:
    """A subscriber key is what gateways key their sets on: never a range of subscribers."""
    if key.version == 4 and not key.is_host:
        return f"{key} is not one IPv4 address (an IPv4 subscriber key is a /32)"
    if key.version == 6 and not 32 <= key.length <= 64:
        return f"{key} is not an IPv6 subscriber prefix (a delegation is /32 to /64)"
    return None
