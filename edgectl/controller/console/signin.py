"""Who is at the console: a session cookie, checked against its API token on every request.

- The cookie (``COOKIE``) holds a random id; the session row holds the id's
  hash, the token's hash and the CSRF token.  HttpOnly (no script reads it),
  SameSite=Strict (no other site's page sends it), Secure when the browser
  reaches the controller over TLS, Path=/console.
- Every request re-checks the token through ``deps.verify`` (the REST API's
  own check and cache): a revoked token ends the session at once in this
  process, within ``poll_interval`` in another.
- Every form carries the session's CSRF token; a POST without it is 403
  before anything else is looked at.  The sign-in form, which has no session
  yet, uses a double-submit cookie (``PRE_COOKIE``) instead.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, status
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from edgectl.controller.api.deps import verify
from edgectl.controller.auth import HOLDERS, READERS
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store, console_sessions
from edgectl.controller.store.console_sessions import ConsoleSession
from edgectl.controller.store.tokens import Principal

COOKIE = "edgectl_console"
PRE_COOKIE = "edgectl_signin"
PATH = "/console"
SIGNIN_PATH = "/console/signin"
SIGNIN_MAX_BODY = 4096  # a token and a CSRF value; the form is read before any credential


class SignInNeeded(Exception):
    """No live session: the page answers with a redirect to the sign-in form."""


@dataclass(frozen=True)
class Signed:
    principal: Principal
    session: ConsoleSession
    cookie: str

    @property
    def can_hold(self) -> bool:
        return self.principal.role in HOLDERS

    @property
    def csrf(self) -> str:
        return self.session.csrf


def _state(request: Request) -> tuple[Store, Settings]:
    return request.app.state.store, request.app.state.settings


async def principal_of(request: Request) -> tuple[Principal, ConsoleSession] | None:
    """The principal behind the request's console cookie, or None (and the session ended)."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    store, settings = _state(request)
    session = await run_in_threadpool(
        console_sessions.find,
        store,
        cookie,
        settings.console_idle_timeout,
        settings.console_absolute_timeout,
    )
    if session is None:
        return None
    principal = await verify(request, session.token_hash)
    if principal is None or principal.role not in READERS:
        # Revoked (or replaced) since sign-in: the session goes with it.
        await run_in_threadpool(console_sessions.end, store, cookie)
        return None
    return principal, session


async def cookie_principal(request: Request) -> Principal | None:
    """For the intake middleware: a console POST's credential is its cookie."""
    if not request.url.path.startswith(PATH + "/"):
        return None
    found = await principal_of(request)
    return None if found is None else found[0]


async def signed(request: Request) -> Signed:
    found = await principal_of(request)
    if found is None:
        raise SignInNeeded
    return Signed(found[0], found[1], request.cookies[COOKIE])


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the console's forms send nothing else).

    Parsed here rather than with Starlette's ``request.form()``, which needs
    python-multipart for a feature (file uploads) the console does not have.
    """
    raw = await request.body()
    if not raw:
        return {}  # no fields at all: the CSRF check refuses it (403)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "expected a form (x-www-form-urlencoded)"
        )
    body = raw.decode("utf-8", "replace")
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        fields.setdefault(key, value)  # the first of a repeated field, as a browser sends one
    return fields


def check_csrf(expected: str, fields: dict[str, str]) -> None:
    given = fields.get("csrf", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token; reload the page"
        )


def secure(request: Request) -> bool:
    """Secure cookies whenever the browser's side is TLS: served over TLS, or
    reached by a name other than loopback on a controller that says a TLS proxy
    sits in front (``allow_plain_http``).  On http://127.0.0.1 (the lab, a
    tunnel) a Secure cookie would never come back."""
    settings: Settings = request.app.state.settings
    if request.url.scheme == "https" or settings.tls_certfile is not None:
        return True
    return settings.allow_plain_http and request.url.hostname not in _LOOPBACK


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name, path=PATH, httponly=True, samesite="strict", secure=secure(request)
    )


def new_pre_token() -> str:
    return secrets.token_urlsafe(24)
