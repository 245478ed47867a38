"""/v1/relays: the ISP's own MX/MSA that dynamic pools may still reach on port 25."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from edgectl.controller.api import convert
from edgectl.controller.api.deps import Netops, Reader, StoreDep
from edgectl.controller.api.models import PathName, RelayCreate, RelayPublic, RelayUpdate
from edgectl.controller.store import catalog

router = APIRouter(prefix="/v1/relays", tags=["relays"])


@router.get("", response_model=list[RelayPublic])
def list_relays(store: StoreDep, _: Reader) -> Any:
    return catalog.list_relays(store)


@router.post("", response_model=RelayPublic, status_code=status.HTTP_201_CREATED)
def create_relay(body: RelayCreate, store: StoreDep, who: Netops) -> Any:
    return catalog.put_relay(store, who.actor, convert.relay(body.name, body), create=True)


@router.get("/{name}", response_model=RelayPublic)
def get_relay(name: PathName, store: StoreDep, _: Reader) -> Any:
    return catalog.get_relay(store, name)


@router.put("/{name}", response_model=RelayPublic)
def update_relay(name: PathName, body: RelayUpdate, store: StoreDep, who: Netops) -> Any:
    return catalog.put_relay(store, who.actor, convert.relay(name, body), create=False)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_relay(name: PathName, store: StoreDep, who: Netops) -> None:
    catalog.delete_relay(store, who.actor, name)
