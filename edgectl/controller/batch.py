"""Serve the long-polls a change wakes together in one worker-thread trip.

A quarantine that reaches every gateway wakes every parked agent at once.
One thread-pool hop and one transaction per agent costs more than the
reads themselves (and many threads fighting over the GIL starve the event
loop that has to write the answers), so requests queued in the same
event-loop turn go to the database together (``store.desired.serve_many``);
those that arrive while a batch runs form the next one.  A batch costs
the database the same few statements whatever its size (``serve_many``), so
it is large enough (``largest``) for a whole fleet woken by one change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from edgectl.controller.errors import NotFound
from edgectl.controller.store.desired import Served, Wanted

ServeMany = Callable[[Sequence[Wanted]], Awaitable[list[Served | NotFound]]]


class Batcher:
    def __init__(self, serve_many: ServeMany, *, concurrency: int = 2, largest: int = 4096) -> None:
        self._serve_many = serve_many
        self._concurrency = concurrency
        self._largest = largest
        self._pending: list[tuple[Wanted, asyncio.Future[Served | NotFound]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def serve(self, gateway: int, since: int | None, epoch: str | None = None) -> Served:
        """What ``desired.serve(store, gateway, since, epoch)`` answers, read in a batch."""
        future: asyncio.Future[Served | NotFound] = asyncio.get_running_loop().create_future()
        self._pending.append(((gateway, since, epoch), future))
        self._kick()
        answer = await future
        if isinstance(answer, NotFound):
            raise answer
        return answer

    def _kick(self) -> None:
        if self._pending and not self._scheduled and len(self._running) < self._concurrency:
            # On the next turn of the loop: everything woken by the same
            # commit queues up first.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if not self._pending or len(self._running) >= self._concurrency:
            return
        batch = self._pending[: self._largest]
        del self._pending[: self._largest]
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._kick()

    async def _run(self, batch: list[tuple[Wanted, asyncio.Future[Served | NotFound]]]) -> None:
        try:
            answers = await self._serve_many([wanted for wanted, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():  # its request may have been cancelled
                future.set_result(answer)
