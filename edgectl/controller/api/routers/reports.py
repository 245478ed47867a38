"""/v1/reports and /v1/cases: abuse reports in (ARF, X-ARF, CSV), attributed and grouped."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import AwareDatetime
from starlette.concurrency import run_in_threadpool

from edgectl.controller.api.deps import Reader, Reporter, StoreDep
from edgectl.controller.api.models import AccountId
from edgectl.controller.errors import Invalid
from edgectl.controller.reports import ParseError, Report, arf, csvfeed, xarf
from edgectl.controller.reports.model import CLASSES
from edgectl.controller.store import reports
from edgectl.controller.store.core import now
from edgectl.controller.store.holds import AT_SKEW

router = APIRouter(tags=["reports"])

_BODIES = {
    "message/rfc822": {"schema": {"type": "string", "description": "one ARF message"}},
    "application/json": {
        "schema": {"description": "one X-ARF v4 object, or a list of them", "type": "object"}
    },
    "text/csv": {"schema": {"type": "string", "description": "a header line, then rows"}},
}


def _json(raw: bytes) -> list[Report]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ParseError("body", f"not JSON: {error}") from None
    if isinstance(data, list):
        if len(data) > reports.MAX_BATCH:
            raise ParseError("body", f"more than {reports.MAX_BATCH} reports")
        return [xarf.parse(item, f"[{i}].") for i, item in enumerate(data)]
    return [xarf.parse(data)]


def parse_body(kind: str, raw: bytes, cls: str | None) -> list[Report]:
    """The reports in a request body, by its media type; all or a ``ParseError``."""
    if kind in ("message/rfc822", "multipart/report"):
        return [arf.parse(raw)]
    if kind == "application/json":
        return _json(raw)
    if kind == "text/csv":
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ParseError("body", f"not UTF-8 at byte {error.start}") from None
        found = csvfeed.parse(text, cls)
        if len(found) > reports.MAX_BATCH:
            raise ParseError("body", f"more than {reports.MAX_BATCH} reports")
        return found
    raise ParseError(
        "Content-Type", "expected message/rfc822 (ARF), application/json (X-ARF) or text/csv"
    )


@router.post("/v1/reports", openapi_extra={"requestBody": {"content": _BODIES, "required": True}})
async def post_reports(
    request: Request,
    store: StoreDep,
    who: Reporter,
    cls: Annotated[
        str | None, Query(alias="class", max_length=32, pattern=r"^[a-z][a-z-]{0,31}$")
    ] = None,
) -> Any:
    """Keep abuse reports: one ARF message (``message/rfc822``), X-ARF v4
    (``application/json``, one object or a list) or CSV (``text/csv``; ``?class=``
    for a feed of one class).  All or nothing: a bad line or field is 422 naming
    it.  Each report is attributed to whoever held its address at its time;
    duplicates (same source and message id, or same address, time and class)
    are counted and dropped."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if cls is not None and cls.strip().lower() not in CLASSES:
        raise Invalid("query.class", f"unknown class (one of {', '.join(sorted(CLASSES))})")
    try:
        parsed = await run_in_threadpool(parse_body, kind, raw, cls)
    except ParseError as error:
        raise Invalid(error.where, error.reason) from None
    latest = now() + AT_SKEW
    for report in parsed:
        # Attributed as of a time that has not come, a report would name whoever
        # holds the address now: a wrong clock or zone, refused like a bad field.
        if report.at > latest:
            raise Invalid(report.where, f"{report.at.isoformat()} lies in the future")
    return await run_in_threadpool(reports.ingest, store, who.actor, parsed)


@router.get("/v1/reports")
def list_reports(
    store: StoreDep,
    _: Reader,
    account: Annotated[AccountId | None, Query()] = None,
    cls: Annotated[
        str | None, Query(alias="class", max_length=32, pattern=r"^[a-z][a-z-]{0,31}$")
    ] = None,
    unattributed: bool = False,
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    case: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    after_id: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Reports, oldest first (page with ``after_id``); ``unattributed=true`` lists
    those nobody held the address of at their time."""
    wanted = reports.ReportFilter(account, cls, unattributed, since, until, case, after_id, limit)
    return reports.listing(store, wanted)


@router.get("/v1/cases")
def list_cases(
    store: StoreDep,
    _: Reader,
    account: Annotated[AccountId | None, Query()] = None,
    cls: Annotated[
        str | None, Query(alias="class", max_length=32, pattern=r"^[a-z][a-z-]{0,31}$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Cases (reports per account and class), most recently updated first."""
    return reports.cases(store, account, cls, limit)


@router.get("/v1/cases/{ident}")
def get_case(ident: Annotated[int, Path(ge=1, le=2**31 - 1)], store: StoreDep, _: Reader) -> Any:
    return reports.case(store, ident)
