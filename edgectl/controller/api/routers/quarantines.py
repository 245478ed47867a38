"""/v1/quarantines: hold an account (or unassigned prefix) in a quarantine mode."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status

from edgectl.controller.api import convert
from edgectl.controller.api.deps import Holder, Reader, StoreDep, require
from edgectl.controller.api.models import (
    AccountId,
    BulkOutcome,
    Lift,
    QuarantineBulk,
    QuarantineCreate,
    QuarantineOutcome,
    QuarantinePublic,
    Text,
)
from edgectl.controller.auth import HOLDERS
from edgectl.controller.store import Store, bulk_holds, holds
from edgectl.controller.store.core import now
from edgectl.controller.store.tokens import Principal
from edgectl.model import QuarantineMode

router = APIRouter(prefix="/v1/quarantines", tags=["quarantines"])

Ident = Annotated[int, Path(ge=1, le=2**31 - 1)]  # an INTEGER key in PostgreSQL
State = Literal["active", "expired", "lifted", "ended", "all"]


@router.post(
    "",
    response_model=QuarantineOutcome,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": QuarantineOutcome, "description": "an active hold was updated"}},
)
def quarantine(body: QuarantineCreate, response: Response, store: StoreDep, who: Holder) -> Any:
    """Quarantine an account; if it already has an active quarantine, that one is
    updated (one active per account) and the answer says ``updated`` with 200.

    ``address`` (with ``at``, default now) instead of ``account`` quarantines the
    account that held the address then, from the session history; ``resolved``
    (and the audit record) says how."""
    outcome = place(store, who, body)
    if outcome["outcome"] == "updated":
        response.status_code = status.HTTP_200_OK
    return outcome


def place(store: Store, who: Principal, body: QuarantineCreate) -> dict[str, Any]:
    """The route's work, also the console's: one path from a request to the store."""
    require(who, HOLDERS)
    spec = holds.QuarantineSpec(
        mode=body.mode,
        reason=body.reason,
        account=None if body.account is None else convert.account(body.account),
        prefix=convert.prefix(body.prefix, "prefix"),
        ticket=body.ticket,
        expires=convert.expiry(body, now()),
        address=convert.prefix(body.address, "address"),
        at=body.at,
        category=body.category,
        self_release=body.self_release,
        ignore_grace=body.ignore_grace,
    )
    hold, created, resolved = holds.quarantine_resolved(store, who.actor, spec)
    outcome = "created" if created else "updated"
    return {"outcome": outcome, "quarantine": hold, "resolved": resolved}


@router.post("/bulk", response_model=BulkOutcome)
def quarantine_many(body: QuarantineBulk, store: StoreDep, who: Holder) -> Any:
    """Quarantine many accounts with one mode and reason (a botnet feed); all or nothing."""
    accounts = [convert.account(a, f"accounts[{i}]") for i, a in enumerate(body.accounts)]
    spec = holds.QuarantineSpec(
        mode=body.mode,
        reason=body.reason,
        account="bulk",
        ticket=body.ticket,
        expires=convert.expiry(body, now()),
        category=body.category,
        self_release=body.self_release,
        ignore_grace=body.ignore_grace,
    )
    return bulk_holds.quarantine_accounts(store, who.actor, accounts, spec)


@router.get("", response_model=list[QuarantinePublic])
def list_quarantines(
    store: StoreDep,
    _: Reader,
    state: State = "active",
    account: Annotated[AccountId | None, Query()] = None,
    ticket: Annotated[Text | None, Query()] = None,
    prefix: Annotated[str | None, Query(max_length=64)] = None,
    mode: Annotated[QuarantineMode | None, Query()] = None,
    actor: Annotated[Text | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    wanted = holds.HoldFilter(
        state,
        account,
        ticket,
        convert.prefix(prefix, "query.prefix"),
        limit,
        offset,
        None if mode is None else mode.value,
        actor,
    )
    return holds.listing(store, "quarantine", wanted)


@router.get("/{ident}", response_model=QuarantinePublic)
def get_quarantine(ident: Ident, store: StoreDep, _: Reader) -> Any:
    return holds.get(store, "quarantine", ident)


@router.post("/{ident}/lift", response_model=QuarantinePublic)
def lift_quarantine(ident: Ident, body: Lift, store: StoreDep, who: Holder) -> Any:
    return lift(store, who, ident, body)


def lift(store: Store, who: Principal, ident: int, body: Lift) -> dict[str, Any]:
    require(who, HOLDERS)
    return holds.lift(store, who.actor, "quarantine", ident, body.reason)
