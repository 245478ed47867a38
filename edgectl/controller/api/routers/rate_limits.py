"""/v1/rate-limits: per-subscriber mail connection limits that pools refer to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from edgectl.controller.api import convert
from edgectl.controller.api.deps import Netops, Reader, StoreDep
from edgectl.controller.api.models import (
    PathName,
    RateLimitCreate,
    RateLimitPublic,
    RateLimitUpdate,
)
from edgectl.controller.store import catalog

router = APIRouter(prefix="/v1/rate-limits", tags=["rate-limits"])


@router.get("", response_model=list[RateLimitPublic])
def list_profiles(store: StoreDep, _: Reader) -> Any:
    return catalog.list_profiles(store)


@router.post("", response_model=RateLimitPublic, status_code=status.HTTP_201_CREATED)
def create_profile(body: RateLimitCreate, store: StoreDep, who: Netops) -> Any:
    update = RateLimitUpdate(**body.model_dump(exclude={"name"}))
    return catalog.put_profile(store, who.actor, convert.profile(body.name, update), create=True)


@router.get("/{name}", response_model=RateLimitPublic)
def get_profile(name: PathName, store: StoreDep, _: Reader) -> Any:
    return catalog.get_profile(store, name)


@router.put("/{name}", response_model=RateLimitPublic)
def update_profile(name: PathName, body: RateLimitUpdate, store: StoreDep, who: Netops) -> Any:
    return catalog.put_profile(store, who.actor, convert.profile(name, body), create=False)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_profile(name: PathName, store: StoreDep, who: Netops) -> None:
    catalog.delete_profile(store, who.actor, name)
