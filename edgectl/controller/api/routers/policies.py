"""/v1/policies and /v1/proposals: escalation ladders, their replay, and the
actions waiting for an analyst."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from edgectl.controller.api.deps import Holder, Netops, Reader, SettingsDep, StoreDep
from edgectl.controller.api.models import Instant, Reason, Strict
from edgectl.controller.errors import Invalid
from edgectl.controller.escalation import ladder
from edgectl.controller.store import policies, proposals
from edgectl.controller.store import replay as replays

router = APIRouter(tags=["escalation"])

Name = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Ident = Annotated[int, Path(ge=1, le=2**31 - 1)]


class PolicyBody(Strict):
    mode: Literal["dry-run", "propose", "enforce"]
    # Checked field by field by the ladder's parser (escalation/ladder.py),
    # which names the field it refuses: strikes[1].threshold, steps[0].mode.
    strikes: list[dict[str, Any]] = Field(min_length=1, max_length=20)
    steps: list[dict[str, Any]] = Field(min_length=1, max_length=ladder.MAX_STEPS)
    window: int


class ReplayBody(Strict):
    since: Instant
    until: Instant


class Decision(Strict):
    reason: Reason
    force: bool = False  # approve even though the account is exempt


class BulkDecision(Decision):
    ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        min_length=1, max_length=proposals.MAX_BULK
    )
    decision: Literal["approve", "reject"]


def _spec(body: PolicyBody) -> dict[str, Any]:
    return {"strikes": body.strikes, "steps": body.steps, "window": body.window}


@router.get("/v1/policies")
def list_policies(store: StoreDep, _: Reader) -> Any:
    return policies.listing(store)


@router.get("/v1/policies/{name}")
def get_policy(name: Name, store: StoreDep, _: Reader) -> Any:
    return policies.get(store, name)


@router.put("/v1/policies/{name}", responses={201: {"description": "created"}})
def put_policy(
    name: Name, body: PolicyBody, response: Response, store: StoreDep, who: Netops
) -> Any:
    """Create or replace a policy.  A new policy acts on reports that arrive
    from now on; replay it over the past first to see what it would do."""
    policy, created = policies.put(store, who.actor, name, body.mode, _spec(body))
    if created:
        response.status_code = status.HTTP_201_CREATED
    return policy


@router.delete("/v1/policies/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_policy(name: Name, store: StoreDep, who: Netops) -> None:
    """Remove a policy and its pending proposals; holds it placed stay until lifted."""
    policies.delete(store, who.actor, name)


@router.post("/v1/policies/{name}/replay")
async def replay_policy(
    name: Name, body: ReplayBody, store: StoreDep, settings: SettingsDep, _: Holder
) -> Any:
    """What the policy would have done over the stored reports and offender
    episodes of ``since``..``until``: counts per step and the accounts.  Acts on
    nothing."""
    if body.until <= body.since:
        raise Invalid("until", "must be after since")
    stored = await run_in_threadpool(policies.get, store, name)
    spec = {k: stored[k] for k in ("strikes", "steps", "window")}
    caps = ladder.Caps(settings.escalation_fleet_per_hour, settings.escalation_pool_per_hour)
    return await run_in_threadpool(
        replays.replay, store, stored["mode"], spec, body.since, body.until, caps
    )


@router.get("/v1/proposals")
def list_proposals(
    store: StoreDep,
    _: Reader,
    state: Literal["pending", "approved", "rejected", "all"] = "pending",
    policy: Annotated[
        str | None, Query(max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Actions waiting for an analyst (oldest first), with the strike's evidence."""
    return proposals.listing(store, state, policy, limit)


@router.post("/v1/proposals/{ident}/approve")
def approve(ident: Ident, body: Decision, store: StoreDep, who: Holder) -> Any:
    """Place the proposed hold (as the analyst); 409 if the account is held
    already, or exempt and ``force`` is not set."""
    return proposals.decide(store, who.actor, [ident], True, body.force, body.reason)[0]


@router.post("/v1/proposals/{ident}/reject")
def reject(ident: Ident, body: Decision, store: StoreDep, who: Holder) -> Any:
    """Drop the proposal; its strike no longer counts towards the next."""
    return proposals.decide(store, who.actor, [ident], False, False, body.reason)[0]


@router.post("/v1/proposals/decide")
def decide_many(body: BulkDecision, store: StoreDep, who: Holder) -> Any:
    """Approve or reject many proposals at once: all of them, or none."""
    approve_all = body.decision == "approve"
    return proposals.decide(store, who.actor, body.ids, approve_all, body.force, body.reason)
