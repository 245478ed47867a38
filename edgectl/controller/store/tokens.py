"""API tokens: created on the controller host, looked up by hash (and cached, see
``TokenCache``) on every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from edgectl.controller.auth import Role, hash_token, new_token
from edgectl.controller.errors import Invalid, NotFound
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the audit log's actor, a role, and for an agent its gateway."""

    actor: str
    role: Role
    gateway: int | None = None
    gateway_name: str | None = None


def authenticate(store: Store, token: str) -> Principal | None:
    return lookup(store, hash_token(token))


def lookup(store: Store, digest: str) -> Principal | None:
    """Who holds the token whose SHA-256 is ``digest``, from the database."""
    with store.read() as connection:
        row = connection.execute(
            sa.select(t.tokens.c.name, t.tokens.c.role).where(t.tokens.c.hash == digest)
        ).first()
        if row is not None:
            return Principal(actor=f"token:{row.name}", role=Role(row.role))
        gateway = connection.execute(
            sa.select(t.gateways.c.id, t.gateways.c.name).where(t.gateways.c.token_hash == digest)
        ).first()
    if gateway is not None:
        return Principal(f"agent:{gateway.name}", Role.AGENT, gateway.id, gateway.name)
    return None


def create(store: Store, name: str, role: Role) -> str:
    """A new token for a person or tool; shown once, stored only as its hash."""
    if role is Role.AGENT:
        raise Invalid("role", "agent tokens come with each gateway (POST /v1/gateways)")
    if not name or len(name) > 200 or not name.isprintable():
        raise Invalid("name", "expected 1-200 printable characters")
    token = new_token()
    with store.write("cli") as change:
        exists = change.connection.execute(sa.select(t.tokens.c.id).where(t.tokens.c.name == name))
        if exists.first() is not None:
            raise Invalid("name", f"a token named {name!r} exists; revoke it first")
        change.connection.execute(
            sa.insert(t.tokens).values(
                name=name, role=role.value, hash=hash_token(token), created_at=change.at
            )
        )
        change.audit("token.create", "token", name, None, {"name": name, "role": role.value})
    return token


def listing(store: Store) -> list[dict[str, Any]]:
    with store.read() as connection:
        rows = connection.execute(
            sa.select(t.tokens.c.name, t.tokens.c.role, t.tokens.c.created_at).order_by(
                t.tokens.c.name
            )
        )
        return [
            {"name": r.name, "role": r.role, "created_at": r.created_at.isoformat()} for r in rows
        ]


def revoke(store: Store, name: str) -> None:
    with store.write("cli") as change:
        row = change.connection.execute(
            sa.select(t.tokens.c.id, t.tokens.c.role, t.tokens.c.hash).where(
                t.tokens.c.name == name
            )
        ).first()
        if row is None:
            raise NotFound(f"no token named {name!r}")
        change.connection.execute(sa.delete(t.tokens).where(t.tokens.c.id == row.id))
        # Its console sign-ins end with it (each request re-checks the token
        # too; this also covers a process whose token cache has not expired).
        change.connection.execute(
            sa.delete(t.console_sessions).where(t.console_sessions.c.token_hash == row.hash)
        )
        change.credentials = True
        change.audit("token.revoke", "token", name, {"name": name, "role": row.role}, None)


class TokenCache:
    """Verified tokens, SHA-256 -> Principal, so a long-poll costs no database read.

    Only tokens the database accepted are kept (an unknown token is looked
    up every time, and cannot fill the cache).  What makes a cached answer
    safe to use:

    * In this process, every write that can take a credential away (token
      revoke, agent token rotation, gateway delete) sets
      ``Change.credentials``; the store then calls ``clear`` after the
      commit and before the write returns, so the token is refused from
      then on.  A lookup that read the database before that commit and
      finishes after the clear is not stored (``generation``).
    * Another controller process (or ``edgectl token revoke`` on the host)
      moves the store's ``credentials_seq`` in its commit; this process's
      periodic re-check (every ``poll_interval``) reads it and calls
      ``clear`` when it moved, or when the re-check fails.  Besides, an
      entry is used for at most ``ttl`` seconds after the database
      confirmed it.
    """

    def __init__(
        self,
        ttl: float,
        *,
        entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._entries = entries
        self._clock = clock
        self._lock = threading.Lock()
        self._principals: dict[str, tuple[float, Principal]] = {}  # digest -> (until, who)
        self.generation = 0

    def get(self, digest: str) -> Principal | None:
        with self._lock:
            found = self._principals.get(digest)
            if found is None:
                return None
            if self._clock() >= found[0]:
                del self._principals[digest]
                return None
            return found[1]

    def begin(self) -> tuple[int, float]:
        """A ticket to take before a database lookup and hand to ``put`` with its result."""
        with self._lock:
            return self.generation, self._clock()

    def put(self, digest: str, principal: Principal, ticket: tuple[int, float]) -> None:
        """Keep ``principal``, read from the database after ``ticket`` was taken."""
        generation, started = ticket
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return  # credentials changed while it was being read: maybe stale
            if len(self._principals) >= self._entries:
                self._principals.clear()
            # Valid for ttl from when the read began, not from now.
            self._principals[digest] = (started + self.ttl, principal)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._principals.clear()
