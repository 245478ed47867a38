"""Wake long-polls when a commit changes a gateway.

Commits happen in worker threads; waiters live on the event loop, so a
commit hands its gateway ids to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[int, asyncio.Event] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def unbind(self) -> None:
        self._loop = None
        self._events.clear()

    def publish(self, gateways: Iterable[int]) -> None:
        """Thread-safe: called by the store after a commit."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between check and call
            loop.call_soon_threadsafe(self._wake, tuple(gateways))

    def _wake(self, gateways: tuple[int, ...]) -> None:
        for gateway in gateways:
            event = self._events.pop(gateway, None)
            if event is not None:
                event.set()

    def event(self, gateway: int) -> asyncio.Event:
        """The event the next commit for ``gateway`` sets (take it before reading)."""
        return self._events.setdefault(gateway, asyncio.Event())

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
