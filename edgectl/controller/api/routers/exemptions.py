"""/v1/exemptions: an account allowed past OP25B, with a ticket and an expiry."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, status

from edgectl.controller.api import convert
from edgectl.controller.api.deps import Holder, Reader, StoreDep, require
from edgectl.controller.api.models import (
    AccountId,
    ExemptionCreate,
    ExemptionPublic,
    Lift,
    Text,
)
from edgectl.controller.auth import HOLDERS
from edgectl.controller.store import Store, holds
from edgectl.controller.store.core import now
from edgectl.controller.store.tokens import Principal

router = APIRouter(prefix="/v1/exemptions", tags=["exemptions"])

Ident = Annotated[int, Path(ge=1, le=2**31 - 1)]  # an INTEGER key in PostgreSQL


@router.post("", response_model=ExemptionPublic, status_code=status.HTTP_201_CREATED)
def exempt(body: ExemptionCreate, store: StoreDep, who: Holder) -> Any:
    return place(store, who, body)


def place(store: Store, who: Principal, body: ExemptionCreate) -> dict[str, Any]:
    """The route's work, also the console's: one path from a request to the store."""
    require(who, HOLDERS)
    spec = holds.ExemptionSpec(
        account=convert.account(body.account),
        ticket=body.ticket,
        reason=body.reason,
        expires=convert.expiry(body, now()),
    )
    return holds.exempt(store, who.actor, spec)


@router.get("", response_model=list[ExemptionPublic])
def list_exemptions(
    store: StoreDep,
    _: Reader,
    state: Literal["active", "expired", "lifted", "ended", "all"] = "active",
    account: Annotated[AccountId | None, Query()] = None,
    ticket: Annotated[Text | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    wanted = holds.HoldFilter(state, account, ticket, None, limit, offset)
    return holds.listing(store, "exemption", wanted)


@router.get("/{ident}", response_model=ExemptionPublic)
def get_exemption(ident: Ident, store: StoreDep, _: Reader) -> Any:
    return holds.get(store, "exemption", ident)


@router.post("/{ident}/lift", response_model=ExemptionPublic)
def lift_exemption(ident: Ident, body: Lift, store: StoreDep, who: Holder) -> Any:
    return lift(store, who, ident, body)


def lift(store: Store, who: Principal, ident: int, body: Lift) -> dict[str, Any]:
    require(who, HOLDERS)
    return holds.lift(store, who.actor, "exemption", ident, body.reason)
