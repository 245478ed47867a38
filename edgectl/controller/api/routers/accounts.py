"""/v1/accounts and /v1/sessions: who holds which address now (the RADIUS feed)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from edgectl.controller.api import convert
from edgectl.controller.api.deps import Netops, Reader, StoreDep
from edgectl.controller.api.models import (
    AccountHistory,
    AccountHolder,
    AccountPublic,
    BulkResult,
    BulkSessions,
    PathAccount,
    SessionPublic,
    SessionPut,
)
from edgectl.controller.errors import NotFound
from edgectl.controller.store import accounts, subscribers

router = APIRouter(tags=["accounts"])


@router.get(
    "/v1/accounts",
    response_model=list[AccountHolder],
    responses={404: {"description": "nobody held the address then"}},
)
def find_holders(
    address: Annotated[str, Query(min_length=1, max_length=64, description="an IP or prefix")],
    store: StoreDep,
    _: Reader,
    at: Annotated[
        str | None,
        Query(max_length=64, description="RFC 3339 time (default: now, from current bindings)"),
    ] = None,
) -> Any:
    """Who held this address (the source IP of an abuse report): at ``at`` from the
    session history (start inclusive, end exclusive; an IPv6 address matches the
    delegated prefix containing it), or now from the current bindings (an IPv6
    prefix also matches delegations inside it)."""
    prefix = convert.prefix_at(address, "query.address")
    if at is None:
        found = accounts.holders(store, prefix)
        when = "now"
    else:
        moment = convert.instant(at, "query.at")
        found = accounts.holder_at(store, prefix, moment)
        when = f"at {moment.isoformat()}"
    if not found:
        raise NotFound(f"nobody held {prefix} {when}")
    return found


@router.get("/v1/accounts/{account}", response_model=AccountPublic)
def get_account(account: PathAccount, store: StoreDep, _: Reader) -> Any:
    return accounts.account_view(store, account, history=False)


@router.get("/v1/accounts/{account}/history", response_model=AccountHistory)
def account_history(account: PathAccount, store: StoreDep, _: Reader) -> Any:
    """Every quarantine and exemption the account ever had, and its session
    intervals (the last 1000), newest first."""
    return accounts.account_view(store, account, history=True)


@router.put("/v1/accounts/{account}/session", response_model=SessionPublic | None)
def start_session(account: PathAccount, body: SessionPut, store: StoreDep, who: Netops) -> Any:
    """Session start or update: the account's addresses are now exactly these."""
    return subscribers.start_session(store, who.actor, convert.binding(account, body))


@router.delete("/v1/accounts/{account}/session", status_code=status.HTTP_204_NO_CONTENT)
def stop_session(account: PathAccount, store: StoreDep, who: Netops) -> None:
    subscribers.stop_session(store, who.actor, account)


@router.post("/v1/sessions/bulk", response_model=BulkResult)
def bulk_sessions(body: BulkSessions, store: StoreDep, who: Netops) -> Any:
    """Many session starts at once, for a RADIUS-accounting relay; all or nothing."""
    bindings = [
        convert.binding(item.account, item, f"bindings[{index}].")
        for index, item in enumerate(body.bindings)
    ]
    return subscribers.bind_many(store, who.actor, bindings)
