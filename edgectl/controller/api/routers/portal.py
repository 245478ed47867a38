"""/v1/portal: what the notice portal may do, and nothing more (role ``portal``).

Look up the hold of whoever holds an address now, log a notice shown (and
get its one-time code), record an acknowledgement and, where the hold's
policy allows, a self-release.  Limits are checked in the store, so a
leaked portal token buys no more than the portal's own page offers.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from edgectl.controller.api import convert
from edgectl.controller.api.deps import SettingsDep, StoreDep, allow
from edgectl.controller.api.models import (
    Acknowledge,
    Acknowledged,
    NoticeCode,
    NoticeCodes,
    NoticeShown,
    NoticesShown,
    PortalHoldPublic,
)
from edgectl.controller.auth import Role
from edgectl.controller.batch import WriteBatcher
from edgectl.controller.errors import Invalid, NotFound
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store, portal
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


@router.post("/notices", response_model=NoticeCode, responses={404: {"description": "not held"}})
async def notice_shown(body: NoticeShown, request: Request, _: Portal) -> Any:
    """The portal is showing the notice to ``address``: the active hold of whoever
    holds it now, and a one-time code for the page (404: nothing to show);
    a reminder without a code once the hold is acknowledged, unless ``full``.

    Logged in the account's notice log.  Requests arriving together are
    written in one transaction (``app.state.notice_batcher``, a WriteBatcher)."""
    address = _source(body.address, "address")
    batcher: NoticeBatcher = request.app.state.notice_batcher
    return await batcher.submit(portal.Shown(address, body.language, body.host, body.full))


@router.post("/notices/batch", response_model=NoticeCodes)
async def notices_shown(body: NoticesShown, request: Request, _: Portal) -> Any:
    """Many notices at once, as ``POST /notices`` each: the portal sends the
    page loads that arrived while its previous request was on the way, so a
    botnet takedown's thousands of pages cost the controller a few requests
    a second, not one each.  An answer is null where the address is not held."""
    shown = [
        portal.Shown(
            _source(item.address, f"notices.{index}.address"), item.language, item.host, item.full
        )
        for index, item in enumerate(body.notices)
    ]
    batcher: NoticeBatcher = request.app.state.notice_batcher
    answers = await asyncio.gather(*(batcher.submit(one) for one in shown), return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, NotFound):
            raise answer  # the batch's write failed: this request fails with it
    return {"answers": [None if isinstance(a, NotFound) else a for a in answers]}


# Notices queued in the same event-loop turn, or while a batch is being
# written, go to the database in one transaction (one commit, one fsync).
NoticeBatcher = WriteBatcher[portal.Shown, dict[str, Any]]


def notice_batcher(store: Store, settings: Settings) -> NoticeBatcher:
    limits_now = limits(settings)
    return WriteBatcher(lambda shown: portal.record_shown(store, shown, limits_now), largest=256)


@router.post("/holds/{ident}/acknowledge", response_model=Acknowledged)
def acknowledge(
    ident: Ident, body: Acknowledge, store: StoreDep, settings: SettingsDep, _: Portal
) -> Any:
    """The subscriber read the notice; with ``release``, lift the hold as
    ``subscriber:<account>`` (the hold's policy and the limits permitting)."""
    address = _source(body.address, "address")
    return portal.acknowledge(store, ident, address, body.code, body.release, limits(settings))
