"""/v1/audit: read-only.  There is no route that deletes or edits an entry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from edgectl.controller.api.deps import Reader, StoreDep
from edgectl.controller.api.models import AuditPublic, Instant
from edgectl.controller.store import audit

router = APIRouter(prefix="/v1/audit", tags=["audit"])

Filter = Annotated[str | None, Query(max_length=200)]


@router.get("", response_model=list[AuditPublic])
def read_audit(
    store: StoreDep,
    _: Reader,
    actor: Filter = None,
    action: Filter = None,
    object_type: Filter = None,
    object_id: Filter = None,
    since: Annotated[Instant | None, Query()] = None,
    until: Annotated[Instant | None, Query()] = None,
    after_id: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Oldest first; page with ``after_id`` set to the last id seen."""
    wanted = audit.AuditFilter(actor, action, object_type, object_id, since, until, after_id, limit)
    return audit.listing(store, wanted)
