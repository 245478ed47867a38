"""The two requests every agent sends after every change, served without FastAPI's
routing, dependency solving and response models, as a plain ASGI middleware.

A change that reaches 1,000 gateways costs each controller three requests per
agent: the woken long-poll's answer, the status report, and the next
long-poll.  Through the full FastAPI stack each cost ~0.8 ms of CPU
(bench/fleet.py under py-spy: route matching over every route, dependency
solving, response-model validation and the exception middlewares made
most of it), so the fleet's CPU, not the database, set the propagation
time.  Here the agent's own, well-formed requests

* ``GET /v1/gateways/NAME/desired-state?since=R&epoch=E&wait=S`` and
* ``POST /v1/gateways/NAME/status`` (a JSON body)

go straight to the same code the routes run (``desired.long_poll``,
``gateways.submit_report``), with the token from the token cache.  Anything
else - another path or method, a parameter this path does not parse, a
token the cache does not hold or not the gateway's own agent's, a body the
model refuses, a report the store refuses - goes to the app untouched
(a body already read is handed on as it came), so every refusal, and its
form, is the app's own.  The middlewares outside this one (security
headers, the intake's size and token checks, the server's error handler)
apply to both.
"""

from __future__ import annotations

import functools
import json
import re
from urllib.parse import parse_qsl

from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgectl.controller.api.deps import still_valid_in
from edgectl.controller.api.models import GatewayPublic, StatusReport
from edgectl.controller.api.routers import desired, gateways
from edgectl.controller.auth import Role, hash_token
from edgectl.controller.errors import ControllerError
from edgectl.controller.store.tokens import Principal, TokenCache

_PATH = re.compile(r"^/v1/gateways/([a-z0-9][a-z0-9_.-]{0,63})/(desired-state|status)$")
_SINCE = re.compile(r"^[0-9]{1,19}$")
_WAIT = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,6})?$")
_EPOCH = re.compile(desired.EPOCH_PATTERN)
_LARGEST = 2**63 - 1


class AgentRoutes:
    def __init__(self, app: ASGIApp, *, state: State) -> None:
        self.app = app
        self.state = state  # the app's: store, settings, notifier, batchers, token cache
        # Built with the app, not at import: the status body's model and its answer's.
        self._report = TypeAdapter(StatusReport)
        self._public = TypeAdapter(GatewayPublic)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = _PATH.match(scope["path"])
        method = scope["method"]
        if found is None or method != ("GET" if found[2] == "desired-state" else "POST"):
            await self.app(scope, receive, send)
            return
        name = found[1]
        who = self._agent(scope, name)
        if who is None:
            await self.app(scope, receive, send)
        elif found[2] == "desired-state":
            await self._desired(scope, receive, send, name, who)
        else:
            await self._status(scope, receive, send, name, who)

    def _agent(self, scope: Scope, name: str) -> tuple[str, Principal] | None:
        """(token digest, principal) of the gateway's own agent, from the cache; else None."""
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                if authorization is not None:
                    return None  # two: the app decides
                authorization = value
        if authorization is None or not authorization.startswith(b"Bearer "):
            return None
        token = authorization[7:].strip()
        if not token or len(token) > 256 or not token.isascii():
            return None
        digest = hash_token(token.decode("ascii"))
        cache: TokenCache = self.state.token_cache
        principal = cache.get(digest)
        if (
            principal is None
            or principal.role is not Role.AGENT
            or principal.gateway is None
            or principal.gateway_name != name
        ):
            return None
        return digest, principal

    async def _desired(
        self, scope: Scope, receive: Receive, send: Send, name: str, who: tuple[str, Principal]
    ) -> None:
        query = _query(scope.get("query_string", b""))
        if query is None:
            await self.app(scope, receive, send)
            return
        since, wait, epoch = query
        digest, principal = who
        assert principal.gateway is not None
        recheck = functools.partial(still_valid_in, self.state, digest, principal)
        try:
            response = await desired.long_poll(
                self.state, principal.gateway, name, since, wait, epoch, receive, recheck
            )
        except HTTPException as error:  # the token was revoked while it waited
            response = JSONResponse(
                {"detail": error.detail}, status_code=error.status_code, headers=error.headers
            )
        except ControllerError as error:  # the gateway was deleted meanwhile
            response = JSONResponse({"detail": error.message}, status_code=error.status)
        await response(scope, receive, send)

    async def _status(
        self, scope: Scope, receive: Receive, send: Send, name: str, who: tuple[str, Principal]
    ) -> None:
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
        if content_type != b"application/json":
            await self.app(scope, receive, send)
            return
        body, messages = await _read(receive)
        replay = _replaying(messages, receive)
        if body is None:
            await self.app(scope, replay, send)
            return
        try:
            report = self._report.validate_python(json.loads(body), from_attributes=True)
            answer = await gateways.submit_report(self.state, name, report)
        except (ValueError, ValidationError, ControllerError):
            # Refused before anything was written (a report the store refuses
            # is refused alone): the app answers, and words the refusal.
            await self.app(scope, replay, send)
            return
        content = self._public.dump_json(self._public.validate_python(answer), by_alias=True)
        await Response(content, media_type="application/json")(scope, receive, send)


def _query(text: bytes) -> tuple[int | None, float, str | None] | None:
    """(since, wait, epoch) if the query string is one this path parses as the
    route would; else None (the app parses it, and refuses what it must)."""
    try:
        pairs = parse_qsl(text.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    values = dict(pairs)
    if len(values) != len(pairs) or not set(values) <= {"since", "wait", "epoch"}:
        return None
    since = values.get("since")
    wait = values.get("wait", "0")
    epoch = values.get("epoch")
    if since is not None and (not _SINCE.match(since) or int(since) > _LARGEST):
        return None
    if not _WAIT.match(wait) or float(wait) > 3600:
        return None
    if epoch is not None and not _EPOCH.match(epoch):
        return None
    return (None if since is None else int(since)), float(wait), epoch


async def _read(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """The whole body (None: the client left first), and the messages it came in."""
    messages = []
    chunks = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that hands on ``messages`` first, as they came."""
    queued = list(messages)

    async def replay() -> Message:
        if queued:
            return queued.pop(0)
        return await receive()

    return replay
