"""The console's pages and forms (``install`` adds them to the app).

Reads call the store functions the REST routes call; actions call the REST
routes' own functions (``quarantines.place`` ...), which check the role.
A refusal is shown on the page with the API's status and words (the field
named), never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path as PathLib
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from edgectl.controller.api import convert
from edgectl.controller.api.deps import require, verify
from edgectl.controller.api.models import ExemptionCreate, Lift, QuarantineCreate
from edgectl.controller.api.routers import exemptions, quarantines
from edgectl.controller.auth import HOLDERS, READERS, hash_token
from edgectl.controller.console import signin, timeline
from edgectl.controller.console.signin import Signed, SignInNeeded
from edgectl.controller.console.templating import Pages
from edgectl.controller.errors import ControllerError, Invalid, NotFound
from edgectl.controller.ids import is_account
from edgectl.controller.store import accounts, audit, console_sessions, gateways, holds, offenders
from edgectl.model import ModelError, Prefix
from edgectl.model.offenders import KINDS

log = logging.getLogger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False)
SignedDep = Annotated[Signed, Depends(signin.signed)]

MODES = ("smtp", "walled-garden", "block")
STATES = ("active", "expired", "lifted", "ended", "all")
# Durations offered by the forms, in seconds ("" = no expiry): a choice, not
# free text, so a typo cannot make a ten-year hold.
DURATIONS = (
    ("3600", "1 hour"),
    ("14400", "4 hours"),
    ("86400", "24 hours"),
    ("259200", "3 days"),
    ("604800", "7 days"),
    ("2592000", "30 days"),
    ("", "no expiry"),
)
NOTICES = {
    "quarantined": "Quarantine saved. The gateways below show when it is applied.",
    "lifted": "Lifted.",
    "exempted": "Exemption saved.",
    "signed-out": "Signed out.",
}
PAGE = 50
SORTS = ("newest", "events")


def _pages(request: Request) -> Pages:
    pages: Pages = request.app.state.console_pages
    return pages


def _render(
    request: Request, name: str, who: Signed | None, status_code: int = 200, **context: Any
) -> Response:
    return _pages(request).render(
        name,
        status_code,
        request=request,
        who=who,
        csrf=None if who is None else who.csrf,
        can_hold=False if who is None else who.can_hold,
        **context,
    )


def problem(error: Exception) -> tuple[int, str]:
    """(status, message) of a refusal, in the API's words."""
    if isinstance(error, Invalid):
        return 422, f"{error.path}: {error.reason}"
    if isinstance(error, ModelError):
        return 422, f"{error.path}: {error.reason}"
    if isinstance(error, ControllerError):
        return error.status, error.message
    if isinstance(error, HTTPException):
        return error.status_code, str(error.detail)
    if isinstance(error, ValidationError):
        parts = []
        for item in error.errors():
            field = ".".join(str(p) for p in item.get("loc", ())) or "form"
            parts.append(f"{field}: {item.get('msg')}")
        return 422, "; ".join(parts)
    raise error


REFUSALS = (Invalid, ModelError, ControllerError, HTTPException, ValidationError)


def _refused(request: Request, who: Signed | None, error: Exception) -> Response:
    code, message = problem(error)
    return _render(request, "error.html", who, code, status=code, message=message)


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


def _account_url(account: str, notice: str | None = None) -> str:
    url = "/console/accounts/" + quote(account, safe="")
    return url + ("?" + urlencode({"notice": notice}) if notice else "")


# -- sign-in ---------------------------------------------------------------------


@router.get("")
async def home(request: Request) -> Response:
    return _see("/console/search")


@router.get("/signin")
async def signin_form(request: Request, notice: str | None = None) -> Response:
    if await signin.principal_of(request) is not None:
        return _see("/console/search")
    pre = signin.new_pre_token()
    response = _render(request, "signin.html", None, pre=pre, notice=NOTICES.get(notice or ""))
    signin.set_cookie(response, request, signin.PRE_COOKIE, pre, 3600)
    return response


@router.post("/signin")
async def signin_submit(request: Request) -> Response:
    fields = await signin.form(request)
    try:
        signin.check_csrf(request.cookies.get(signin.PRE_COOKIE, ""), fields)
    except HTTPException as error:
        return _refused(request, None, error)
    token = fields.get("token", "").strip()
    principal = None
    if token and len(token) <= 256 and token.isascii():
        digest = hash_token(token)
        principal = await verify(request, digest)
    if principal is None or principal.role not in READERS:
        pre = signin.new_pre_token()
        response = _render(
            request,
            "signin.html",
            None,
            401,
            pre=pre,
            error="token: not accepted (unknown, revoked, or an agent's token)",
        )
        signin.set_cookie(response, request, signin.PRE_COOKIE, pre, 3600)
        return response
    store = request.app.state.store
    cookie, _ = await run_in_threadpool(
        console_sessions.create, store, digest, principal.actor, principal.role.value
    )
    log.info("console sign-in by %s (%s)", principal.actor, principal.role.value)
    response = _see("/console/search")
    absolute = int(request.app.state.settings.console_absolute_timeout)
    signin.set_cookie(response, request, signin.COOKIE, cookie, absolute)
    signin.clear_cookie(response, request, signin.PRE_COOKIE)
    return response


@router.post("/signout")
async def signout(request: Request, who: SignedDep) -> Response:
    fields = await signin.form(request)
    try:
        signin.check_csrf(who.csrf, fields)
    except HTTPException as error:
        return _refused(request, who, error)
    await run_in_threadpool(
        console_sessions.sign_out, request.app.state.store, who.cookie, who.principal.actor
    )
    log.info("console sign-out by %s", who.principal.actor)
    response = _see("/console/signin?notice=signed-out")
    signin.clear_cookie(response, request, signin.COOKIE)
    return response


# -- search and account ---------------------------------------------------------------


def _search(store: Any, q: str, at: str | None) -> dict[str, Any]:
    prefix = convert.prefix_at(q, "q")
    if at:
        moment = convert.instant(at, "at")
        found = accounts.holder_at(store, prefix, moment)
        when = f"at {moment.isoformat()}"
    else:
        found = accounts.holders(store, prefix)
        when = "now"
    if not found:
        raise NotFound(f"nobody held {prefix} {when}")
    return {"holders": found, "when": when, "prefix": str(prefix)}


def _looks_like_address(q: str) -> bool:
    return any(c in q for c in ".:/") and all(c in "0123456789abcdefABCDEF.:/" for c in q)


@router.get("/search")
def search(
    request: Request,
    who: SignedDep,
    q: Annotated[str, Query(max_length=200)] = "",
    at: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    q = q.strip()
    context: dict[str, Any] = {"q": q, "at": at}
    if not q:
        return _render(request, "search.html", who, **context)
    if not _looks_like_address(q):
        if is_account(q):
            return _see(_account_url(q))
        error = Invalid("q", "not an IP address, prefix or account id")
        return _render(request, "search.html", who, 422, error=problem(error)[1], **context)
    try:
        context.update(_search(request.app.state.store, q, at.strip() or None))
    except Invalid as error:
        # Some account ids look like addresses (a MAC: 00:11:22:aa:bb:cc).
        if error.path == "q" and is_account(q):
            return _see(_account_url(q))
        return _render(request, "search.html", who, 422, error=problem(error)[1], **context)
    except NotFound as missing:
        return _render(request, "search.html", who, 404, error=missing.message, **context)
    except REFUSALS as error:
        return _render(
            request, "search.html", who, problem(error)[0], error=problem(error)[1], **context
        )
    return _render(request, "search.html", who, **context)


def _account_data(store: Any, account: str) -> dict[str, Any]:
    view = accounts.account_view(store, account, history=True)
    addresses = set()
    session = view["session"] or {}
    for value in (session.get("ipv4"), session.get("ipv6")):
        if value:
            addresses.add(value)
    for interval in view["sessions"][:50]:
        addresses.add(interval["address"])
    keys = tuple(sorted({str(Prefix.parse(a)) for a in addresses}))
    found = offenders.listing(store, offenders.OffenderFilter(limit=200, keys=keys)) if keys else []
    trail = audit.listing(
        store,
        audit.AuditFilter(object_type="account", object_id=account, limit=200, newest_first=True),
    )
    for kind in ("quarantine", "exemption"):
        ids = tuple(str(h["id"]) for h in view[f"{kind}s"][:50])
        if ids:
            trail += audit.listing(
                store,
                audit.AuditFilter(object_type=kind, object_ids=ids, limit=200, newest_first=True),
            )
    active_q = next((q for q in view["quarantines"] if q["state"] == "active"), None)
    active_e = next((e for e in view["exemptions"] if e["state"] == "active"), None)
    return {
        "view": view,
        "offenders": found,
        "events": timeline.build(view["sessions"], found, trail),
        "active_quarantine": active_q,
        "active_exemption": active_e,
        "gateways": gateways.list_gateways(store),
    }


@router.get("/accounts/{account}")
def account_page(
    request: Request, account: str, who: SignedDep, notice: str | None = None
) -> Response:
    if not is_account(account):
        return _refused(request, who, Invalid("account", "not an account id"))
    try:
        data = _account_data(request.app.state.store, account)
    except REFUSALS as error:
        return _refused(request, who, error)
    return _render(
        request,
        "account.html",
        who,
        account=account,
        notice=NOTICES.get(notice or ""),
        modes=MODES,
        durations=DURATIONS,
        **data,
    )


# -- actions ------------------------------------------------------------------------------


async def _action_form(request: Request, who: Signed) -> dict[str, str]:
    """The form, after its CSRF check: a POST without the token goes no further."""
    fields = await signin.form(request)
    signin.check_csrf(who.csrf, fields)
    return fields


def _duration(fields: dict[str, str]) -> int | None:
    text = fields.get("duration", "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise Invalid("duration", "must be whole seconds")
    return int(text)


def _quarantine_body(account: str, fields: dict[str, str]) -> QuarantineCreate:
    data: dict[str, Any] = {
        "account": account,
        "mode": fields.get("mode", ""),
        "reason": fields.get("reason", "").strip(),
    }
    if fields.get("ticket", "").strip():
        data["ticket"] = fields["ticket"].strip()
    duration = _duration(fields)
    if duration is not None:
        data["duration"] = duration
    return QuarantineCreate.model_validate(data)


def _exemption_body(account: str, fields: dict[str, str]) -> ExemptionCreate:
    data: dict[str, Any] = {
        "account": account,
        "ticket": fields.get("ticket", "").strip(),
        "reason": fields.get("reason", "").strip(),
    }
    duration = _duration(fields)
    if duration is not None:
        data["duration"] = duration
    return ExemptionCreate.model_validate(data)


def _label(seconds: str) -> str:
    return dict(DURATIONS).get(seconds, f"{seconds} s")


async def _hold_account(
    request: Request,
    who: Signed,
    account: str,
    *,
    action: str,
    verb: str,
    build: Callable[[str, dict[str, str]], Any],
    place: Callable[[Any, Any, Any], Any],
    done: str,
) -> Response:
    """Quarantine or exempt an account: a confirmation page first, then the REST
    route's own function (its role check, audit and refusals)."""
    try:
        fields = await _action_form(request, who)
        body = build(account, fields)
        if fields.get("confirm") != "yes":
            # The routes' own role check, early: no confirmation page for a viewer.
            require(who.principal, HOLDERS)
            # Step one: say exactly what will happen, and ask again.
            return _render(
                request,
                "confirm.html",
                who,
                action=action,
                account=account,
                fields=fields,
                duration=_label(fields.get("duration", "")),
                target=f"/console/accounts/{quote(account, safe='')}/{verb}",
            )
        await run_in_threadpool(place, request.app.state.store, who.principal, body)
    except REFUSALS as error:
        return _refused(request, who, error)
    return _see(_account_url(account, done))


@router.post("/accounts/{account}/quarantine")
async def quarantine_account(request: Request, account: str, who: SignedDep) -> Response:
    return await _hold_account(
        request,
        who,
        account,
        action="quarantine",
        verb="quarantine",
        build=_quarantine_body,
        place=quarantines.place,
        done="quarantined",
    )


@router.post("/accounts/{account}/exempt")
async def exempt_account(request: Request, account: str, who: SignedDep) -> Response:
    return await _hold_account(
        request,
        who,
        account,
        action="exemption",
        verb="exempt",
        build=_exemption_body,
        place=exemptions.place,
        done="exempted",
    )


async def _lift(request: Request, who: Signed, kind: str, ident: int) -> Response:
    try:
        fields = await _action_form(request, who)
        body = Lift.model_validate({"reason": fields.get("reason", "").strip()})
        module = quarantines if kind == "quarantine" else exemptions
        store = request.app.state.store
        hold = await run_in_threadpool(module.lift, store, who.principal, ident, body)
    except REFUSALS as error:
        return _refused(request, who, error)
    if hold.get("account"):
        return _see(_account_url(hold["account"], "lifted"))
    return _see("/console/quarantines?notice=lifted")


@router.post("/quarantines/{ident}/lift")
async def lift_quarantine(
    request: Request, ident: Annotated[int, Path(ge=1, le=2**31 - 1)], who: SignedDep
) -> Response:
    return await _lift(request, who, "quarantine", ident)


@router.post("/exemptions/{ident}/lift")
async def lift_exemption(
    request: Request, ident: Annotated[int, Path(ge=1, le=2**31 - 1)], who: SignedDep
) -> Response:
    return await _lift(request, who, "exemption", ident)


# -- lists ----------------------------------------------------------------------------------


def _choice(value: str, allowed: tuple[str, ...], field: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise Invalid(field, f"must be one of {', '.join(allowed)}")
    return value


def _text(value: str, field: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if not value.isprintable() or len(value) > 200:
        raise Invalid(field, "must be 1-200 printable characters")
    return value


@router.get("/quarantines")
def quarantine_list(
    request: Request,
    who: SignedDep,
    state: Annotated[str, Query(max_length=16)] = "active",
    mode: Annotated[str, Query(max_length=16)] = "",
    ticket: Annotated[str, Query(max_length=200)] = "",
    actor: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    notice: str | None = None,
) -> Response:
    params = {"state": state, "mode": mode, "ticket": ticket, "actor": actor}
    try:
        wanted = holds.HoldFilter(
            state=_choice(state, STATES, "state") or "active",
            ticket=_text(ticket, "ticket"),
            limit=PAGE + 1,  # one more than shown: is there a next page?
            offset=(page - 1) * PAGE,
            mode=_choice(mode, MODES, "mode"),
            actor=_text(actor, "actor"),
        )
        store = request.app.state.store
        rows = holds.listing(store, "quarantine", wanted)
        counts = holds.quarantine_counts(store, wanted)
    except REFUSALS as error:
        return _refused(request, who, error)
    return _render(
        request,
        "quarantines.html",
        who,
        rows=rows[:PAGE],
        more=len(rows) > PAGE,
        page=page,
        params=params,
        counts=counts,
        states=STATES,
        modes=MODES,
        notice=NOTICES.get(notice or ""),
    )


@router.get("/offenders")
def offender_list(
    request: Request,
    who: SignedDep,
    gateway: Annotated[str, Query(max_length=64)] = "",
    kind: Annotated[str, Query(max_length=32)] = "",
    sort: Annotated[str, Query(max_length=16)] = "newest",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    params = {"gateway": gateway, "kind": kind, "sort": sort}
    try:
        wanted = offenders.OffenderFilter(
            gateway=_text(gateway, "gateway"),
            kind=_choice(kind, KINDS, "kind"),
            limit=limit,
            newest_first=_choice(sort, SORTS, "sort") != "events",
        )
        store = request.app.state.store
        rows = offenders.listing(store, wanted)
        names = [g["name"] for g in gateways.list_gateways(store)]
    except REFUSALS as error:
        return _refused(request, who, error)
    return _render(
        request,
        "offenders.html",
        who,
        rows=rows,
        params=params,
        kinds=KINDS,
        gateways=names,
        limit=limit,
    )


@router.get("/gateways")
def gateway_list(request: Request, who: SignedDep, fragment: bool = False) -> Response:
    rows = gateways.list_gateways(request.app.state.store)
    # fragment=1: the table alone, for console.js to swap in without a reload.
    name = "_gateways_table.html" if fragment else "gateways.html"
    return _render(request, name, who, gateways=rows)


@router.get("/audit")
def audit_list(
    request: Request,
    who: SignedDep,
    actor: Annotated[str, Query(max_length=200)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    object_type: Annotated[str, Query(max_length=32)] = "",
    object_id: Annotated[str, Query(max_length=200)] = "",
    since: Annotated[str, Query(max_length=64)] = "",
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    params = {
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "since": since,
    }
    try:
        wanted = audit.AuditFilter(
            actor=_text(actor, "actor"),
            action=_text(action, "action"),
            object_type=_text(object_type, "object_type"),
            object_id=_text(object_id, "object_id"),
            since=convert.instant(since, "since") if since.strip() else None,
            limit=PAGE + 1,
            newest_first=True,
            before_id=before_id,
        )
        rows = audit.listing(request.app.state.store, wanted)
    except REFUSALS as error:
        return _refused(request, who, error)
    older = rows[PAGE - 1]["id"] if len(rows) > PAGE else None
    return _render(request, "audit.html", who, rows=rows[:PAGE], params=params, older=older)


# -- wiring ---------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    app.state.console_pages = Pages()
    app.include_router(router)
    static = PathLib(__file__).with_name("static")
    app.mount("/console/static", StaticFiles(directory=static), name="console-static")

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, _: SignInNeeded) -> Response:
        # A fetch from console.js sees the redirect too, and reloads the page.
        return _see("/console/signin")
