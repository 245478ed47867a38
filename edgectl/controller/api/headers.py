"""Response headers every answer carries, as a plain ASGI middleware.

- ``Cache-Control: no-store``: answers carry agent tokens (POST /v1/gateways,
  /token) and subscriber data; no proxy or browser cache may keep them.  A
  handler that sets its own Cache-Control keeps it.
- ``X-Content-Type-Options: nosniff``: a browser never reads JSON (which may
  echo operator input) as HTML or script.
- ``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer``: /docs,
  where an operator pastes a token, cannot be framed, and no URL leaks on.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
