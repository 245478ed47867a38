"""``create_app(settings, store)``: the FastAPI application, with no import-time state."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse

from edgectl.controller import sweeper
from edgectl.controller.api import docs
from edgectl.controller.api.agent_routes import AgentRoutes
from edgectl.controller.api.deps import bearer_principal
from edgectl.controller.api.headers import SecurityHeaders
from edgectl.controller.api.intake import Intake
from edgectl.controller.api.routers import (
    accounts,
    audit,
    desired,
    exemptions,
    gateways,
    metrics,
    offenders,
    policies,
    pools,
    portal,
    quarantines,
    rate_limits,
    relays,
    reports,
)
from edgectl.controller.batch import Batcher, WriteBatcher
from edgectl.controller.console import signin as console_signin
from edgectl.controller.console import views as console
from edgectl.controller.errors import ControllerError, Invalid, NotFound
from edgectl.controller.escalation import engine
from edgectl.controller.notify import Notifier
from edgectl.controller.radius.server import RadiusServer
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store
from edgectl.controller.store import desired as served_state
from edgectl.controller.store import gateways as gateway_store
from edgectl.controller.store.desired import Served, Wanted
from edgectl.controller.store.tokens import Principal, TokenCache
from edgectl.model import ModelError

log = logging.getLogger(__name__)

# How long a verified token is trusted without asking the database again.  A
# revocation anywhere reaches every process sooner: this process's at commit,
# another's at the next re-check (poll_interval), which reads the credentials
# sequence.  Long, so that a fleet of long-polls woken together does not look
# up every agent's token again (one query per agent per change).
TOKEN_TTL = 300.0

_SEGMENT = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


def location(path: str) -> list[str | int]:
    """``settings.op25b_ports[0]`` -> ``["body", "settings", "op25b_ports", 0]``."""
    if path.startswith("query."):
        return ["query", path.removeprefix("query.")]
    parts: list[str | int] = ["body"]
    for name, index in _SEGMENT.findall(path):
        if name:
            parts.append(name)
        else:
            parts.append(int(index) if index.isdigit() else index)
    return parts


def _invalid(path: str, reason: str) -> JSONResponse:
    detail = [{"type": "value_error", "loc": location(path), "msg": reason, "field": path}]
    return JSONResponse({"detail": detail}, status_code=422)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Invalid)
    async def invalid(_: Request, error: Invalid) -> JSONResponse:
        return _invalid(error.path, error.reason)

    @app.exception_handler(ModelError)
    async def model_error(_: Request, error: ModelError) -> JSONResponse:
        return _invalid(error.path, error.reason)

    @app.exception_handler(ControllerError)
    async def controller_error(_: Request, error: ControllerError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the whole input back; drop "input"/"ctx"
        # so a 50,000-binding body does not come back as a 422.
        detail = [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
            for e in error.errors()
        ]
        return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Logged with the traceback for fixing; the client gets no internals.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return JSONResponse({"detail": "internal error"}, status_code=500)


async def _credential(request: Request) -> Principal | None:
    """A body's sender: a bearer token, or for the console's forms its session cookie."""
    principal = await bearer_principal(request)
    if principal is None:
        principal = await console_signin.cookie_principal(request)
    return principal


def create_app(
    settings: Settings,
    store: Store,
    *,
    sweep: bool = True,
    radius: RadiusServer | None = None,
    escalate: bool | None = None,
) -> FastAPI:
    """The API over ``store``; ``sweep=False`` leaves expiry to the caller (tests).

    ``escalate`` runs the escalation engine (default: as ``sweep``); tests
    that want to drive it pass by pass call ``engine.run_once`` instead.

    ``radius`` (sockets already bound) runs while the app does: its commits
    go through ``store``, whose listeners wake long-polls like a REST write's.
    """
    notifier = Notifier()
    escalation = engine.Stats()
    store.subscribe(notifier.publish)
    # Verified tokens: this process's revocations clear it before they return,
    # another process's within a re-check (``revisions`` below).
    token_cache = TokenCache(max(settings.poll_interval, TOKEN_TTL))
    store.on_credentials(token_cache.clear)
    credentials: list[int | None] = [None]  # the credentials sequence last read

    async def revisions() -> tuple[dict[int, int], str | None]:
        limiter = app.state.read_limiter
        try:
            found = await anyio.to_thread.run_sync(served_state.revisions, store, limiter=limiter)
        except Exception:
            # Cannot tell whether a token was revoked elsewhere: trust none.
            token_cache.clear()
            credentials[0] = None
            raise
        if found.credentials != credentials[0]:
            # Revoked or replaced through another process (or the first read).
            token_cache.clear()
            credentials[0] = found.credentials
        return found.gateways, found.epoch

    async def serve_many(wanted: Sequence[Wanted]) -> list[Served | NotFound]:
        limiter = app.state.read_limiter
        call = functools.partial(served_state.serve_many, store, wanted)
        return await anyio.to_thread.run_sync(call, limiter=limiter)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        notifier.bind(asyncio.get_running_loop())
        # Long-poll reads get threads of their own: status reports and other
        # writes queued on the write lock must not hold every worker thread.
        app.state.read_limiter = anyio.CapacityLimiter(8)
        tasks = [asyncio.create_task(notifier.run(revisions, settings.poll_interval))]
        # Other controller processes' commits, as they happen (PostgreSQL NOTIFY).
        listening = threading.Event()
        follower = threading.Thread(
            target=store.follow,
            args=(notifier.publish_remote, listening, notifier.listener_lost),
            name="edgectl-listen",
            daemon=True,
        )
        follower.start()
        if sweep:
            tasks.append(asyncio.create_task(sweeper.run(store, settings)))
        if sweep if escalate is None else escalate:
            tasks.append(asyncio.create_task(engine.run(store, settings, escalation)))
        if radius is not None:
            radius.start()
        try:
            yield
        finally:
            if radius is not None:
                # Joins its threads (a commit in progress finishes): off the loop.
                await anyio.to_thread.run_sync(radius.stop)
            listening.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await anyio.to_thread.run_sync(follower.join, 5.0)
            notifier.unbind()

    app = FastAPI(
        title="edgectl controller",
        version="1",
        summary="Pools, relays, limits, quarantines and the desired state of each gateway",
        lifespan=lifespan,
        # FastAPI's own pages load Swagger UI/ReDoc from a CDN; docs.install
        # serves them from the package instead (or not at all: settings.docs).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.notifier = notifier
    app.state.token_cache = token_cache
    app.state.read_limiter = None  # the default pool until the lifespan starts
    app.state.radius = radius
    app.state.escalation = escalation
    app.state.batcher = Batcher(serve_many)
    # Status reports: not audited, so one actor names the batch's transaction.
    app.state.status_batcher = WriteBatcher(
        functools.partial(gateway_store.report_many, store, "agents")
    )
    app.state.notice_batcher = portal.notice_batcher(store, settings)
    # A 100,000-quarantine snapshot is ~6 MB of JSON and ~1 MB gzipped; level
    # 1 costs a few tens of ms for it.  Small answers are not worth compressing.
    # The agents' long-polls and status reports, past the routing and
    # dependencies (see agent_routes); inside the compression, so a snapshot
    # is compressed on this path too.
    app.add_middleware(AgentRoutes, state=app.state)
    app.add_middleware(GZipMiddleware, minimum_size=65536, compresslevel=1)
    # Added last runs first: headers on every answer, then the token and size
    # checks before any body is read.
    app.add_middleware(
        Intake,
        max_body=settings.max_body_bytes,
        authenticate=_credential,
        # The sign-in form's body is the credential itself: small, and read unauthenticated.
        open_bodies={console_signin.SIGNIN_PATH: console_signin.SIGNIN_MAX_BODY},
    )
    app.add_middleware(SecurityHeaders)
    if settings.docs:
        docs.install(app)
    _install_handlers(app)
    for module in (
        pools,
        relays,
        rate_limits,
        gateways,
        desired,
        accounts,
        quarantines,
        exemptions,
        offenders,
        portal,
        audit,
        metrics,
        reports,
        policies,
    ):
        app.include_router(module.router)
    console.install(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        """Liveness for load balancers; no token, no data."""
        return {"ok": True}

    return app
