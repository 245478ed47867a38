"""/v1/gateways: registration, served pools, agent tokens, status reports."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from edgectl.controller.api import convert
from edgectl.controller.api.deps import Agent, Netops, ReaderOrAgent, StoreDep, own_gateway
from edgectl.controller.api.models import (
    AgentToken,
    GatewayCreate,
    GatewayCreated,
    GatewayPublic,
    GatewayUpdate,
    PathGateway,
    StatusReport,
)
from edgectl.controller.auth import Role
from edgectl.controller.batch import WriteBatcher
from edgectl.controller.store import gateways

router = APIRouter(prefix="/v1/gateways", tags=["gateways"])


@router.get("", response_model=list[GatewayPublic])
def list_gateways(store: StoreDep, who: ReaderOrAgent) -> Any:
    found = gateways.list_gateways(store)
    if who.role is Role.AGENT:
        found = [g for g in found if g["name"] == who.gateway_name]
    return found


@router.post("", response_model=GatewayCreated, status_code=status.HTTP_201_CREATED)
def create_gateway(body: GatewayCreate, store: StoreDep, who: Netops) -> Any:
    spec = gateways.GatewaySpec(body.name, convert.settings(body.settings), tuple(body.pools))
    public, token = gateways.create_gateway(store, who.actor, spec)
    return {**public, "agent_token": token}


@router.get("/{name}", response_model=GatewayPublic)
def get_gateway(name: PathGateway, store: StoreDep, who: ReaderOrAgent) -> Any:
    own_gateway(who, name)
    return gateways.get_gateway(store, name)


@router.patch("/{name}", response_model=GatewayPublic)
def update_gateway(name: PathGateway, body: GatewayUpdate, store: StoreDep, who: Netops) -> Any:
    settings = None if body.settings is None else convert.settings(body.settings)
    pools = None if body.pools is None else tuple(body.pools)
    return gateways.update_gateway(store, who.actor, name, settings, pools)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_gateway(name: PathGateway, store: StoreDep, who: Netops) -> None:
    gateways.delete_gateway(store, who.actor, name)


@router.post("/{name}/token", response_model=AgentToken)
def rotate_token(name: PathGateway, store: StoreDep, who: Netops) -> Any:
    """A new agent token; the old one stops working at once."""
    return {"agent_token": gateways.rotate_token(store, who.actor, name)}


@router.post("/{name}/status", response_model=GatewayPublic)
async def report_status(name: PathGateway, body: StatusReport, request: Request, who: Agent) -> Any:
    """The revision the agent has in force, what it saw, and its offenders (optional).

    Every agent reports each change it applies: reports arriving together
    are committed together (``gateways.report_many``), so a change that
    reaches 1,000 gateways costs a few commits, not 1,000.
    """
    own_gateway(who, name)
    return await submit_report(request.app.state, name, body)


async def submit_report(state: Any, name: str, body: StatusReport) -> dict[str, Any]:
    """Gateway ``name``'s report, checked, into the next batch; its public form
    (the route above, and the agents' own path: ``agent_routes``)."""
    reported = None if body.offenders is None else convert.offenders(body.offenders)
    batcher: WriteBatcher[gateways.Report, dict[str, Any]] = state.status_batcher
    return await batcher.submit(gateways.Report(name, body.applied_revision, body.detail, reported))
