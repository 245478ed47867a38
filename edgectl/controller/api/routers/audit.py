"""/v1/audit: read-only.  There is no route that deletes or edits an entry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AfterValidator

from edgectl.controller.api.deps import Reader, StoreDep
from edgectl.controller.api.models import AuditPublic, Instant
from edgectl.controller.store import audit

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def _searchable(value: str | None) -> str | None:
    # Every stored actor/action/object is printable; a NUL would reach
    # PostgreSQL, which refuses it (a 500 instead of a 422).
    if value is not None and not value.isprintable():
        raise ValueError("must be printable text")
    return value


Filter = Annotated[str | None, Query(max_length=200), AfterValidator(_searchable)]


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
