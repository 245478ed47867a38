"""What a request may cost before the API reads its body, as a plain ASGI middleware.

FastAPI reads and parses a body before any dependency runs, the token check
included: an unauthenticated 100 MB POST cost ~300 MB and was answered 401
only after all of it had arrived.  Here, before the app sees a request that
has a body:

1. a ``Content-Length`` over ``max_body`` is 413 at once;
2. the bearer token must be valid (any role: the route still checks which),
   else 401 - nothing of the body is read;
3. the body is read up to ``max_body`` (a chunked body past it is 413, and
   reading stops there), then handed to the app.

A path in ``open_bodies`` (the console's sign-in form, whose body *is* the
credential) skips step 2 and may send at most its own small limit instead.

Early answers close the connection (``Connection: close``): the unread rest of
the body is never read.  Requests without a body (every GET, the long-polls)
pass straight through.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgectl.controller.store.tokens import Principal

Authenticate = Callable[[Request], Awaitable[Principal | None]]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client hung up mid-body: there is nobody to answer, and half a body
    must never reach a handler."""


class Intake:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        authenticate: Authenticate,
        open_bodies: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.authenticate = authenticate
        self.open_bodies = dict(open_bodies or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        open_limit = self.open_bodies.get(scope.get("path", ""))
        max_body = self.max_body if open_limit is None else open_limit
        length_text = headers.get(b"content-length")
        chunked = b"transfer-encoding" in headers
        if length_text is None and not chunked:
            await self.app(scope, receive, send)
            return
        if length_text is not None:
            # The HTTP parser refuses a malformed one before this; another server may not.
            if not length_text.isdigit():
                await _refuse(send, 400, "Content-Length must be a number")
                return
            length = int(length_text)
            if length > max_body:
                await _refuse(send, 413, self._too_large(max_body))
                return
            if length == 0 and not chunked:
                await self.app(scope, receive, send)
                return
        if open_limit is None and await self.authenticate(Request(scope)) is None:
            await _refuse(send, 401, "bearer token required", {"www-authenticate": "Bearer"})
            return
        try:
            body = await self._read(receive, max_body)
        except BodyTooLarge:
            await _refuse(send, 413, self._too_large(max_body))
            return
        except ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self, limit: int) -> str:
        if limit != self.max_body:
            return f"request body is larger than {limit} bytes"
        return f"request body is larger than {limit} bytes (setting max_body_bytes)"

    async def _read(self, receive: Receive, max_body: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The whole body as one message, then the server's own messages (disconnects)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _refuse(
    send: Send, status: int, detail: str, extra: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((name.encode(), value.encode()) for name, value in (extra or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
