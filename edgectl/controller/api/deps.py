"""Dependencies: the store, the caller, and who may call what.

All of them are ``async``: FastAPI runs a plain ``def`` dependency in the
thread pool, a hop that costs more than the work here.  A token is checked
against ``TokenCache`` first and looked up in the database (in the pool)
only when the cache does not have it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from edgectl.controller.auth import HOLDERS, NETOPS, READERS, Role, hash_token
from edgectl.controller.settings import Settings
from edgectl.controller.store import Store
from edgectl.controller.store.tokens import Principal, TokenCache, lookup

_bearer = HTTPBearer(auto_error=False, description="a token from `edgectl token create`")


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def verify(request: Request, digest: str) -> Principal | None:
    """Who holds the token with SHA-256 ``digest``: from the cache, else the database."""
    return await verify_in(request.app.state, digest)


async def verify_in(state: Any, digest: str) -> Principal | None:
    """``verify`` with the app's ``state`` (its token cache and store)."""
    cache: TokenCache = state.token_cache
    principal = cache.get(digest)
    if principal is not None:
        return principal
    ticket = cache.begin()
    principal = await run_in_threadpool(lookup, state.store, digest)
    if principal is not None:
        cache.put(digest, principal, ticket)
    return principal


def _token_problem(token: str) -> bool:
    return len(token) > 256 or not token.isascii()


async def bearer_principal(request: Request) -> Principal | None:
    """The holder of the request's bearer token, or None; reads no body.

    For the intake middleware, which must know before a body is read.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or _token_problem(token):
        return None
    return await verify(request, hash_token(token))


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bearer token required", _CHALLENGE)
    token = credentials.credentials
    if _token_problem(token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", _CHALLENGE)
    digest = hash_token(token)
    principal = await verify(request, digest)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", _CHALLENGE)
    request.state.token_digest = digest  # for a long-poll to check again after waiting
    return principal


async def still_valid(request: Request, principal: Principal) -> None:
    """401 if the request's token was revoked (or replaced) since it was checked.

    For long-polls, which may wait minutes between authenticating and answering.
    """
    await still_valid_in(request.app.state, request.state.token_digest, principal)


async def still_valid_in(state: Any, digest: str, principal: Principal) -> None:
    """``still_valid`` with the app's ``state`` and the token's digest."""
    if await verify_in(state, digest) != principal:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", _CHALLENGE)


def require(principal: Principal, allowed: frozenset[Role]) -> Principal:
    """403 unless ``principal`` has one of ``allowed``: the one role check, used by
    the REST dependencies below and by the console's forms alike."""
    if principal.role not in allowed:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"role {principal.role.value} may not do this"
        )
    return principal


def allow(*roles: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency admitting only ``roles``; anyone else authenticated gets 403."""
    allowed = frozenset(roles)

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return require(principal, allowed)

    return check


def own_gateway(principal: Principal, name: str) -> None:
    """An agent sees its own gateway only."""
    if principal.role is Role.AGENT and principal.gateway_name != name:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "an agent may only read its own gateway")


Reader = Annotated[Principal, Depends(allow(*READERS))]
Holder = Annotated[Principal, Depends(allow(*HOLDERS))]
Netops = Annotated[Principal, Depends(allow(*NETOPS))]
ReaderOrAgent = Annotated[Principal, Depends(allow(*READERS, Role.AGENT))]
Agent = Annotated[Principal, Depends(allow(Role.AGENT))]
Reporter = Annotated[Principal, Depends(allow(Role.ABUSE, Role.NETOPS, Role.REPORTER))]
