"""API tokens: created on the controller host, looked up by hash on every request."""

from __future__ import annotations

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
    digest = hash_token(token)
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
            sa.select(t.tokens.c.id, t.tokens.c.role).where(t.tokens.c.name == name)
        ).first()
        if row is None:
            raise NotFound(f"no token named {name!r}")
        change.connection.execute(sa.delete(t.tokens).where(t.tokens.c.id == row.id))
        change.audit("token.revoke", "token", name, {"name": name, "role": row.role}, None)
