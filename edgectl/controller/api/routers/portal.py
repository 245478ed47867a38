"""/v1/portal: what the notice portal may do, and nothing more (role ``portal``).

Look up the hold of whoever holds an address now, log a notice shown (and
get its one-time code), record an acknowledgement and, where the hold's
policy allows, a self-release.  Limits are checked in the store, so a
leaked portal token buys no more than the portal's own page offers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from edgectl.controller.api import convert
from edgectl.controller.api.deps import SettingsDep, StoreDep, allow
from edgectl.controller.api.models import (
    Acknowledge,
    Acknowledged,
    NoticeCode,
    NoticeShown,
    PortalHoldPublic,
)
from edgectl.controller.auth import Role
from edgectl.controller.errors import Invalid
from edgectl.controller.settings import Settings
from edgectl.controller.store import portal
from edgectl.controller.store.tokens import Principal
from edgectl.model import Prefix

router = APIRouter(prefix="/v1/portal", tags=["portal"])

Portal = Annotated[Principal, Depends(allow(Role.PORTAL))]
Ident = Annotated[int, Path(ge=1, le=2**31 - 1)]


def limits(settings: Settings) -> portal.Limits:
    return portal.Limits(
        releases=settings.self_release_limit,
        window=timedelta(days=settings.self_release_window_days),
        grace=timedelta(hours=settings.self_release_grace_hours),
        code_ttl=timedelta(seconds=settings.portal_code_seconds),
    )


def _source(text: str, path: str) -> Prefix:
    """A request's source: one address, never a prefix (that is staff's question)."""
    address = convert.prefix_at(text, path)
    if not address.is_host:
        raise Invalid(path, f"{address} is a prefix: give the request's source address")
    return address


@router.get("/holds", response_model=PortalHoldPublic, responses={404: {"description": "not held"}})
def hold_by_address(
    address: Annotated[str, Query(min_length=1, max_length=64)],
    store: StoreDep,
    settings: SettingsDep,
    _: Portal,
) -> Any:
    """The active hold of the account that holds ``address`` now (404: nothing to show)."""
    return portal.hold_for(store, _source(address, "query.address"), limits(settings))


@router.post("/holds/{ident}/notices", response_model=NoticeCode)
def notice_shown(
    ident: Ident, body: NoticeShown, store: StoreDep, settings: SettingsDep, _: Portal
) -> Any:
    """Log that the notice was shown to ``address``; returns the page's one-time code."""
    address = _source(body.address, "address")
    return portal.record_shown(store, ident, address, body.language, body.host, limits(settings))


@router.post("/holds/{ident}/acknowledge", response_model=Acknowledged)
def acknowledge(
    ident: Ident, body: Acknowledge, store: StoreDep, settings: SettingsDep, _: Portal
) -> Any:
    """The subscriber read the notice; with ``release``, lift the hold as
    ``subscriber:<account>`` (the hold's policy and the limits permitting)."""
    address = _source(body.address, "address")
    return portal.acknowledge(store, ident, address, body.code, body.release, limits(settings))
