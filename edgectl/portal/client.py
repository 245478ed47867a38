"""The portal's only way to the controller: its REST routes under /v1/portal.

httpx enters the portal here.  One AsyncClient for the process (keep-alive
connections to the controller: a TLS handshake per notice would cost more
than the notice).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from edgectl.portal.config import PortalConfig

CONNECTIONS = 32  # kept-alive connections to the controller
# Notices go to the controller in batches: a request each cost the portal
# ~3 ms of httpx and the controller ~3 ms of FastAPI (a profile at 500/s),
# more than the notice itself.  A batch leaves as soon as a sender is free,
# so at low load a notice goes alone, without waiting; under load the
# batches grow with what arrived while the previous ones were on the way.
BATCH = 128  # notices in one request (the controller takes up to 256)
SENDERS = 2  # batches on the way at once: one is sent while one is written
WAITING = 4096  # notices queued at most; beyond, the page says "busy"


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
        self._waiting: deque[tuple[dict[str, Any], asyncio.Future[dict[str, Any] | None]]] = deque()
        self._senders: set[asyncio.Task[None]] = set()

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

    async def notice(
        self, address: str, language: str, host: str | None, full: bool = False
    ) -> dict[str, Any] | None:
        """The hold to show ``address`` and the page's one-time code; None: not held.
        An acknowledged hold's answer is a reminder without a code, unless ``full``.

        The controller has logged the notice when this returns: the page
        never shows a code the controller does not know."""
        if len(self._waiting) >= WAITING:
            raise ControllerUnavailable(f"{WAITING} notices already wait for the controller")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        body = {"address": address, "language": language, "host": host, "full": full}
        self._waiting.append((body, future))
        if len(self._senders) < SENDERS:
            sender = loop.create_task(self._send())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return await future

    async def _send(self) -> None:
        """Send what waits, a batch at a time, until nothing does."""
        while self._waiting:
            batch = [self._waiting.popleft() for _ in range(min(BATCH, len(self._waiting)))]
            try:
                answers = await self._notices([body for body, _ in batch])
            except BaseException as error:
                # Every page waiting on this batch hears why; none hangs.
                failure = (
                    error
                    if isinstance(error, ControllerUnavailable)
                    else ControllerUnavailable(f"notices: {error!r}")
                )
                for _, future in batch:
                    if not future.done():  # its subscriber may have gone meanwhile
                        future.set_exception(failure)
                if not isinstance(error, Exception):
                    raise  # cancelled: the portal is stopping
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)

    async def _notices(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        found = await self._call("POST", "/v1/portal/notices/batch", json={"notices": bodies})
        if isinstance(found, Refusal):
            raise ControllerUnavailable(f"notices refused: {found.status} {found.detail}")
        answers: list[dict[str, Any] | None] = found["answers"]
        if len(answers) != len(bodies):
            raise ControllerUnavailable(f"{len(answers)} answers for {len(bodies)} notices")
        return answers

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
