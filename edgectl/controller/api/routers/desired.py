"""/v1/gateways/{name}/desired-state: what an agent enforces, as snapshot or delta.

Long-poll: with ``since`` equal to the current revision and ``wait`` > 0
the request parks until a change for this gateway commits (woken by the
in-process notifier; re-checked every ``poll_interval`` for changes made
by another controller process) or the wait runs out.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from edgectl.controller.api.deps import ReaderOrAgent, SettingsDep, StoreDep, own_gateway
from edgectl.controller.api.models import DesiredStateEnvelope, PathGateway
from edgectl.controller.notify import Notifier
from edgectl.controller.store import desired, gateways

router = APIRouter(prefix="/v1/gateways", tags=["desired-state"])


@router.get(
    "/{name}/desired-state",
    response_class=Response,
    responses={200: {"model": DesiredStateEnvelope, "description": "snapshot or delta"}},
)
async def desired_state(
    name: PathGateway,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    who: ReaderOrAgent,
    since: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="the revision the caller has applied")
    ] = None,
    wait: Annotated[
        float, Query(ge=0, le=3600, description="seconds to wait for a change past `since`")
    ] = 0,
) -> Response:
    own_gateway(who, name)
    gateway = await run_in_threadpool(gateways.gateway_id, store, name)
    notifier: Notifier = request.app.state.notifier
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.max_wait)
    while since is not None:
        # Take the wake-up event before reading, so a commit in between still wakes us.
        event = notifier.event(gateway)
        if await run_in_threadpool(desired.revision, store, gateway) != since:
            break
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await notifier.wait(event, min(remaining, settings.poll_interval))
    served = await run_in_threadpool(desired.serve, store, gateway, since)
    return Response(served.body, media_type="application/json")
