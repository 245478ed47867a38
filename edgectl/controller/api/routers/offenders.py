"""/v1/offenders: subscribers the gateways' block logs named, with who holds them now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from edgectl.controller.api.deps import Reader, StoreDep
from edgectl.controller.api.models import OffenderPublic
from edgectl.controller.store import offenders
from edgectl.model.offenders import OffenderKind

router = APIRouter(prefix="/v1/offenders", tags=["offenders"])


@router.get("", response_model=list[OffenderPublic])
def list_offenders(
    store: StoreDep,
    _: Reader,
    gateway: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    ] = None,
    kind: Annotated[OffenderKind | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The latest reports of every gateway (or one), aggregated per (key, kind, policy):
    counts summed, most events first, then most recently seen.  404 for a gateway
    nobody has (one that has not reported yet lists nothing)."""
    return offenders.listing(store, offenders.OffenderFilter(gateway, kind, limit))
