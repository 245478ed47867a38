"""/v1/gateways/{name}/desired-state: what an agent enforces, as snapshot or delta.

The cursor is ``since`` with the ``epoch`` of the store it came from (see
``store/epoch.py``): a cursor of another epoch, or one ahead of the
gateway's revision (the database was restored under it, and the epoch is
replaced then), is answered with a snapshot.  Every answer names the
epoch; without ``epoch`` (agents that predate it) a cursor is taken as
before.

Long-poll: with ``since`` equal to the current revision and ``wait`` > 0
the request parks until a change for this gateway commits (woken by the
in-process notifier; changes made by another controller process are caught
by the notifier's shared revision re-check every ``poll_interval``) or the
wait runs out.

This is the path every agent takes after every change, so it does as
little as it can: the token comes from the cache, an agent's gateway id
from its token, the "is there anything new" check from the notifier's
memory when that is fresh, and the one database read that remains (the
body) runs in a thread pool of its own, so writers queued on the write lock
cannot starve it.  An agent's own well-formed requests reach ``long_poll``
without the route's dependencies (``api/agent_routes.py``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response
from starlette.types import Receive

from edgectl.controller.api.deps import ReaderOrAgent, StoreDep, own_gateway, still_valid_in
from edgectl.controller.api.models import DesiredStateEnvelope, PathGateway
from edgectl.controller.auth import Role
from edgectl.controller.batch import Batcher
from edgectl.controller.notify import Notifier
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store, desired, gateways
from edgectl.controller.store import epoch as store_epoch

router = APIRouter(prefix="/v1/gateways", tags=["desired-state"])

# How many re-check intervals a remembered revision is trusted to park a
# request without a read.  Every commit here and every NOTIFY from elsewhere
# forgets it at once, and every re-check refreshes it; one that was stale
# (a change elsewhere whose notification was lost) parks a request that the
# next re-check wakes, the same bound as for a request parked before that
# change.  Longer than one interval: when 1,000 agents re-poll over the
# seconds after a change (each after its status report), a loaded re-check
# runs late, and each re-poll past the age read the database again.
_MEMORY = 3

EPOCH_PATTERN = "^[0-9a-f]{1,32}$"


async def _serve(
    state: Any, store: Store, gateway: int, since: int | None, epoch: str | None
) -> desired.Served:
    if since is not None:
        # Long-polls: those a commit wakes together are read together.
        batcher: Batcher = state.batcher
        return await batcher.serve(gateway, since, epoch)
    limiter: anyio.CapacityLimiter | None = state.read_limiter
    call = functools.partial(desired.serve, store, gateway, since, epoch)
    return await anyio.to_thread.run_sync(call, limiter=limiter)


async def _restored(store: Store, notifier: Notifier, gateway: str, served: desired.Served) -> None:
    """A cursor ahead of its gateway: the store went back in time.  A new epoch
    sends every agent a snapshot, including those whose lost revisions the
    store will have counted past by the time they ask."""
    reason = (
        f"gateway {gateway} asked from a revision ahead of its {served.revision}: "
        "the database was restored or replaced"
    )
    call = functools.partial(
        store_epoch.rotate, store, "controller:restore-detected", reason, served.epoch
    )
    notifier.saw_epoch(await anyio.to_thread.run_sync(call))


async def _hung_up(receive: Receive) -> None:
    """Returns when the client disconnects (a parked long-poll then ends at once)."""
    while (await receive())["type"] != "http.disconnect":
        pass


@router.get(
    "/{name}/desired-state",
    response_class=Response,
    responses={200: {"model": DesiredStateEnvelope, "description": "snapshot or delta"}},
)
async def desired_state(
    name: PathGateway,
    request: Request,
    store: StoreDep,
    who: ReaderOrAgent,
    since: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="the revision the caller has applied")
    ] = None,
    wait: Annotated[
        float, Query(ge=0, le=3600, description="seconds to wait for a change past `since`")
    ] = 0,
    epoch: Annotated[
        str | None,
        Query(
            pattern=EPOCH_PATTERN,
            description="the store epoch `since` belongs to (from the last answer)",
        ),
    ] = None,
) -> Response:
    own_gateway(who, name)
    if who.role is Role.AGENT and who.gateway is not None:
        gateway = who.gateway  # own_gateway checked the name
    else:
        gateway = await anyio.to_thread.run_sync(gateways.gateway_id, store, name)
    state = request.app.state
    return await long_poll(
        state,
        gateway,
        name,
        since,
        wait,
        epoch,
        request.receive,
        functools.partial(still_valid_in, state, request.state.token_digest, who),
    )


async def long_poll(
    state: Any,
    gateway: int,
    name: str,
    since: int | None,
    wait: float,
    epoch: str | None,
    receive: Receive,
    recheck: Callable[[], Awaitable[None]],
) -> Response:
    """The answer to a desired-state request of ``gateway`` (``name``), its
    parameters checked: the route above, and the agents' own path
    (``agent_routes``).  ``recheck`` raises if the caller's token was revoked
    while it waited; ``receive`` says when the client hung up."""
    store: Store = state.store
    settings: Settings = state.settings
    notifier: Notifier = state.notifier
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.max_wait)
    gone: asyncio.Task[None] | None = None
    try:
        while True:
            # Take the wake-up event before reading, so a commit in between still wakes us.
            event = notifier.event(gateway)
            shared = notifier.polling  # the shared re-check covers other processes' changes
            expired = loop.time() >= deadline
            if (
                since is None
                or expired
                or not shared
                or (epoch is not None and epoch != notifier.epoch)
                or notifier.known(gateway, _MEMORY * settings.poll_interval) != since
            ):
                began = notifier.began()
                served = await _serve(state, store, gateway, since, epoch)
                if served.ahead:
                    await _restored(store, notifier, name, served)
                    served = await _serve(state, store, gateway, since, epoch)
                notifier.saw_epoch(served.epoch)
                notifier.saw(gateway, served.revision, began)
                if since is None or expired or served.kind != "delta" or served.revision != since:
                    return Response(served.body, media_type="application/json")
            remaining = max(0.0, deadline - loop.time())
            timeout = remaining if shared else min(remaining, settings.poll_interval)
            if gone is None:
                gone = asyncio.ensure_future(_hung_up(receive))
            await notifier.wait(gateway, since, event, timeout, gone)
            if gone.done():
                return Response(status_code=499)  # nobody is listening any more
            # A long wait outlives a token revoked meanwhile: check it again.
            await recheck()
    finally:
        if gone is not None:
            gone.cancel()
