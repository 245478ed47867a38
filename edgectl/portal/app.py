"""The portal's web app: the notice for any GET (a short reminder once the
subscriber has acknowledged it, the whole notice one link away), the
acknowledgement form's POST, and the RFC 8908 captive-portal API.

Every redirected request arrives with the subscriber's own source address
(the gateway DNATs, it does not masquerade), so the request's peer address
is the subscriber; the Host header says what they asked for.  Answers are
never cached (the notice answers for whatever host was asked) and close the
connection: after a release, the browser's next request must open a new
connection, which the gateway no longer steers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from edgectl.portal.client import Controller, ControllerUnavailable, Refusal
from edgectl.portal.config import PortalConfig
from edgectl.portal.pages import Pages, choose_language

log = logging.getLogger(__name__)

ACK_PATH = "/.edgectl/acknowledge"
NOTICE_PATH = "/.edgectl/notice"  # the whole notice again, after acknowledging
CAPTIVE_PATH = "/.edgectl/captive"
FORM_LIMIT = 4096  # the form has three short fields
NO_STORE = {"Cache-Control": "no-store", "Connection": "close"}

MESSAGES = {
    "code": {
        "en": "The confirmation code was wrong or has expired. Go back and type the code shown.",
        "ja": "確認コードが違うか、有効期限が切れています。"
        "戻って表示されたコードを入力してください。",
    },
    "limit": {
        "en": "You have restored access yourself too often recently: please call support.",
        "ja": "ご自身での解除回数の上限に達しました。サポート窓口にご連絡ください。",
    },
    "forbidden": {
        "en": "This restriction can only be lifted by our support team.",
        "ja": "この制限はサポート窓口でのみ解除できます。",
    },
    "gone": {
        "en": "This restriction has already ended.",
        "ja": "この制限はすでに終了しています。",
    },
    "unavailable": {
        "en": "The service is busy. Please try again in a minute.",
        "ja": "ただいま混み合っています。しばらくしてからもう一度お試しください。",
    },
}


def _peer(request: Request) -> str:
    assert request.client is not None
    return request.client.host.removeprefix("::ffff:")


def _why(refusal: Refusal) -> str:
    if refusal.field == "code":
        return "code"
    if refusal.status == 409 and "limit" in refusal.detail:
        return "limit"
    if refusal.status == 409 and "cannot be released" in refusal.detail:
        return "forbidden"
    return "gone"


def create_app(config: PortalConfig, pages: Pages, controller: Controller) -> Starlette:
    def language_of(request: Request) -> str:
        return choose_language(request.headers.get("accept-language"), config.default_language)

    def page(name: str, language: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = pages.render(name, language, **values)
        return HTMLResponse(html, status_code=status, headers=NO_STORE)

    async def notice(request: Request, full: bool = False) -> Response:
        language = language_of(request)
        address = _peer(request)
        host = request.headers.get("host", "")[:253] or None
        try:
            minted = await controller.notice(address, language, host, full)
        except ControllerUnavailable as error:
            log.warning("controller unavailable: %s", error)
            return page("refused", language, 503, why=MESSAGES["unavailable"][language])
        if minted is None:
            return page("clear", language)
        hold = minted["hold"]
        since = datetime.fromisoformat(hold["created_at"]).astimezone(UTC)
        common = {
            "host": host or address,
            "account": hold["account"] or "-",
            "category_text": pages.category_text(hold["category"], language),
            "since": since.strftime("%Y-%m-%d %H:%M UTC"),
            "ticket": hold["ticket"],
        }
        if minted["reminder"]:
            # Acknowledged (RFC 6108: no further immediate notices): one line
            # and a link to the whole notice, where the release form is.
            acknowledged = datetime.fromisoformat(hold["acknowledged_at"]).astimezone(UTC)
            return page(
                "reminder",
                language,
                acknowledged=acknowledged.strftime("%Y-%m-%d %H:%M UTC"),
                notice_path=NOTICE_PATH,
                **common,
            )
        return page(
            "notice",
            language,
            **common,
            hold_id=hold["id"],
            code=minted["code"],
            can_release=hold["self_release"] and hold["releases_left"] > 0,
            releases_left=hold["releases_left"],
            window_days=hold["window_days"],
        )

    async def full_notice(request: Request) -> Response:
        return await notice(request, full=True)

    async def acknowledge(request: Request) -> Response:
        language = language_of(request)
        body = await request.body()
        fields = parse_qs(body[:FORM_LIMIT].decode("utf-8", "replace"), max_num_fields=8)
        hold_text = (fields.get("hold") or [""])[0]
        code = (fields.get("code") or [""])[0].strip()
        release = (fields.get("release") or [""])[0] == "1"
        if not hold_text.isdigit() or not 0 < int(hold_text) < 2**31:
            return page("refused", language, 400, why=MESSAGES["gone"][language])
        if not code or len(code) > 32:
            # A blind POST has no code: refused here, and again by the controller.
            return page("refused", language, 400, why=MESSAGES["code"][language])
        try:
            done = await controller.acknowledge(int(hold_text), _peer(request), code, release)
        except ControllerUnavailable as error:
            log.warning("controller unavailable: %s", error)
            return page("refused", language, 503, why=MESSAGES["unavailable"][language])
        if isinstance(done, Refusal):
            status = 400 if done.status == 422 else 409
            return page("refused", language, status, why=MESSAGES[_why(done)][language])
        return page(
            "done",
            language,
            released=done["released"],
            releases_left=done["releases_left"],
            notice_path=NOTICE_PATH,
        )

    async def captive(request: Request) -> Response:
        """RFC 8908: is this client captive, and where does it go to leave."""
        try:
            hold = await controller.hold(_peer(request))
        except ControllerUnavailable:
            return JSONResponse({"captive": False}, status_code=503, headers=NO_STORE)
        data: dict[str, Any] = {"captive": hold is not None}
        if hold is not None:
            data["user-portal-url"] = config.public_url
            if hold["expires_at"] is not None:
                left = datetime.fromisoformat(hold["expires_at"]) - datetime.now(UTC)
                data["seconds-remaining"] = max(0, int(left.total_seconds()))
        return JSONResponse(
            data, media_type="application/captive+json", headers={"Cache-Control": "no-store"}
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await controller.close()

    routes = [
        Route(CAPTIVE_PATH, captive, methods=["GET"]),
        Route(ACK_PATH, acknowledge, methods=["POST"]),
        Route(NOTICE_PATH, full_notice, methods=["GET", "HEAD"]),
        Route("/.edgectl/healthz", healthz, methods=["GET"]),
        # Whatever page the subscriber opened, on whatever host: the notice.
        Route("/{path:path}", notice, methods=["GET", "HEAD"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
