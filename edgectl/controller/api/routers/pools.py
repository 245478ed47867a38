"""/v1/pools: subscriber and infrastructure address space (netops writes, everyone reads)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from edgectl.controller.api import convert
from edgectl.controller.api.deps import Netops, Reader, StoreDep
from edgectl.controller.api.models import PathName, PoolCreate, PoolPublic, PoolUpdate
from edgectl.controller.store import catalog

router = APIRouter(prefix="/v1/pools", tags=["pools"])


@router.get("", response_model=list[PoolPublic])
def list_pools(store: StoreDep, _: Reader) -> Any:
    return catalog.list_pools(store)


@router.post("", response_model=PoolPublic, status_code=status.HTTP_201_CREATED)
def create_pool(body: PoolCreate, store: StoreDep, who: Netops) -> Any:
    return catalog.create_pool(store, who.actor, convert.pool(body.name, body))


@router.get("/{name}", response_model=PoolPublic)
def get_pool(name: PathName, store: StoreDep, _: Reader) -> Any:
    return catalog.get_pool(store, name)


@router.put("/{name}", response_model=PoolPublic)
def update_pool(name: PathName, body: PoolUpdate, store: StoreDep, who: Netops) -> Any:
    return catalog.update_pool(store, who.actor, convert.pool(name, body))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_pool(name: PathName, store: StoreDep, who: Netops) -> None:
    catalog.delete_pool(store, who.actor, name)
