"""The portal's only way to the controller: its REST routes under /v1/portal.

httpx enters the portal here.  One AsyncClient for the process (keep-alive
connections to the controller: a TLS handshake per notice would cost more
than the notice).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from edgectl.portal.config import PortalConfig

CONNECTIONS = 32  # kept-alive connections to the controller


class ControllerUnavailable(Exception):
    """The controller did not answer usefully: the page says "try again"."""


@dataclass(frozen=True)
class Refusal:
    status: int
    field: str | None
    detail: str


class Controller:
    def __init__(self, config: PortalConfig, transport: httpx.AsyncBaseTransport | None = None):
        verify: Any = True if config.ca_file is None else str(config.ca_file)
        self.http = httpx.AsyncClient(
            base_url=config.controller_url,
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=config.timeout,
            verify=verify,
            transport=transport,
            limits=httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS),
        )
        # Requests wait here, not in httpx's pool: httpcore rescans its whole
        # queue on every request it assigns, so a queue of thousands (a botnet
        # takedown's page loads) costs quadratic CPU in the portal.
        self._slots = asyncio.Semaphore(CONNECTIONS)

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | Refusal:
        try:
            async with self._slots:
                response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ControllerUnavailable(str(error)) from error
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        if response.status_code in (404, 409, 422):
            return _refusal(response)
        raise ControllerUnavailable(
            f"{method} {path}: {response.status_code} {response.text[:200]}"
        )

    async def hold(self, address: str) -> dict[str, Any] | None:
        found = await self._call("GET", "/v1/portal/holds", params={"address": address})
        return None if isinstance(found, Refusal) else found

    async def notice(self, address: str, language: str, host: str | None) -> dict[str, Any] | None:
        """The hold to show ``address`` and the page's one-time code; None: not held."""
        body = {"address": address, "language": language, "host": host}
        found = await self._call("POST", "/v1/portal/notices", json=body)
        return None if isinstance(found, Refusal) else found

    async def acknowledge(
        self, hold: int, address: str, code: str, release: bool
    ) -> dict[str, Any] | Refusal:
        body = {"address": address, "code": code, "release": release}
        return await self._call("POST", f"/v1/portal/holds/{hold}/acknowledge", json=body)


def _refusal(response: httpx.Response) -> Refusal:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    field = None
    if isinstance(detail, list) and detail:  # FastAPI's validation errors
        loc = detail[0].get("loc", [])
        field = str(loc[-1]) if loc else None
        detail = detail[0].get("msg", "")
    elif isinstance(detail, str) and ":" in detail:
        head = detail.split(":", 1)[0]
        field = head if head.isidentifier() else None
    return Refusal(response.status_code, field, str(detail))
