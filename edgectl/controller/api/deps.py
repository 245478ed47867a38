"""Dependencies: the store, the caller, and who may call what."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from edgectl.controller.auth import Role
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store
from edgectl.controller.store.tokens import Principal, authenticate

_bearer = HTTPBearer(auto_error=False, description="a token from `edgectl token create`")


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_principal(
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bearer token required", _CHALLENGE)
    token = credentials.credentials
    if len(token) > 256 or not token.isascii():
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", _CHALLENGE)
    principal = await run_in_threadpool(authenticate, store, token)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", _CHALLENGE)
    return principal


def allow(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting only ``roles``; anyone else authenticated gets 403."""
    allowed = frozenset(roles)

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {principal.role.value} may not do this"
            )
        return principal

    return check


def own_gateway(principal: Principal, name: str) -> None:
    """An agent sees its own gateway only."""
    if principal.role is Role.AGENT and principal.gateway_name != name:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "an agent may only read its own gateway")


Reader = Annotated[Principal, Depends(allow(Role.VIEWER, Role.ABUSE, Role.NETOPS))]
Holder = Annotated[Principal, Depends(allow(Role.ABUSE, Role.NETOPS))]
Netops = Annotated[Principal, Depends(allow(Role.NETOPS))]
ReaderOrAgent = Annotated[
    Principal, Depends(allow(Role.VIEWER, Role.ABUSE, Role.NETOPS, Role.AGENT))
]
Agent = Annotated[Principal, Depends(allow(Role.AGENT))]
