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
from typing import Any, Generic, TypeVar

import anyio.to_thread

from edgectl.controller.errors import NotFound
from edgectl.controller.store.desired import Served, Wanted

Item = TypeVar("Item")
Answer = TypeVar("Answer")
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
            _settle(batch, error)
            return
        _settle(batch, answers)


def _settle(batch: Sequence[tuple[Any, asyncio.Future[Any]]], outcome: Any) -> None:
    """Each caller of ``batch`` gets its answer (``outcome`` in order), or all the
    one error (``outcome`` an exception: the whole batch failed)."""
    if isinstance(outcome, Exception):
        for _, future in batch:
            if not future.done():
                future.set_exception(outcome)
        return
    for (_, future), answer in zip(batch, outcome, strict=True):
        if not future.done():  # its request may have been cancelled
            future.set_result(answer)


class WriteBatcher(Generic[Item, Answer]):
    """Writes queued in the same event-loop turn, or while a batch is being
    written, go to the database together: ``write(items)`` in a worker
    thread, one transaction, one commit (one fsync) for all; one batch at a
    time, since the store serializes writers anyway.

    ``write`` answers each item (an exception instance is that item's
    refusal, raised to its caller alone); if it raises, every caller of the
    batch gets the error.
    """

    def __init__(
        self, write: Callable[[list[Item]], Sequence[Answer | Exception]], largest: int = 1024
    ) -> None:
        self._write = write
        self._largest = largest
        self._pending: list[tuple[Item, asyncio.Future[Answer | Exception]]] = []
        self._running = False

    async def submit(self, item: Item) -> Answer:
        future: asyncio.Future[Answer | Exception] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().call_soon(self._start)
        answer = await future
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _start(self) -> None:
        if not self._pending:
            self._running = False
            return
        batch = self._pending[: self._largest]
        del self._pending[: self._largest]
        task = asyncio.get_running_loop().create_task(self._run(batch))
        task.add_done_callback(lambda _: self._start())

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Answer | Exception]]]) -> None:
        try:
            answers = await anyio.to_thread.run_sync(self._write, [item for item, _ in batch])
        except Exception as error:  # the whole batch failed: each caller hears why
            _settle(batch, error)
            return
        _settle(batch, answers)
