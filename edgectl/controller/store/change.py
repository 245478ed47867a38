"""One write transaction's unit of work, and the compiled-catalogue cache it reads.

Its own module so that the modules a write goes through (loaders,
materialize) depend on it without depending on the store handle
(``core.Store``), which runs ``materialize.finish`` at commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.compile import Catalogue, Topology
from edgectl.controller.store import schema
from edgectl.model import Prefix


def to_json(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


@dataclass
class Change:
    """One write transaction.

    Its sequence number is taken first, under the counter's row lock, so
    sequence order is commit order: an agent that has seen revision N has
    seen every change numbered N or less.
    """

    connection: Connection
    seq: int
    at: datetime
    actor: str
    # Addresses whose subscriber keys must be recompiled before commit.
    addresses: set[Prefix] = field(default_factory=set)
    structure: bool = False  # settings/pools/relays/profiles changed
    rebuild: set[int] = field(default_factory=set)  # gateways to recompile whole
    touched: set[int] = field(default_factory=set)  # gateways whose revision moved
    # Entry scopes whose entries moved: their gateways' revisions move too.
    scopes: set[int] = field(default_factory=set)
    # Every agent must look again (the store's epoch changed).
    everyone: bool = False
    catalog_seq: int = 0  # when the catalogue last changed, as of this change's start
    # A token was revoked or rotated, or a gateway (and its agent token) deleted:
    # credential caches of this process are cleared before the write returns.
    credentials: bool = False
    views: ViewCache | None = None  # the store's compiled-catalogue cache, see loaders.view
    view: tuple[Catalogue, Topology] | None = None  # as loaders.view found it
    # Account ids by reference, as this transaction read or created them: a
    # bulk binding resolves its 5,000 accounts once, not once per step.
    account_ids: dict[str, int] = field(default_factory=dict)

    def audit(
        self,
        action: str,
        object_type: str,
        object_id: str,
        before: object,
        after: object,
        reason: str | None = None,
    ) -> None:
        self.connection.execute(
            sa.insert(schema.audit).values(
                seq=self.seq,
                at=self.at,
                actor=self.actor,
                action=action,
                object_type=object_type,
                object_id=object_id,
                before=to_json(before),
                after=to_json(after),
                reason=reason,
            )
        )

    def audit_many(self, records: list[dict[str, Any]]) -> None:
        """Many audit records in one statement (bulk operations)."""
        if not records:
            return
        self.connection.execute(
            sa.insert(schema.audit),
            [
                {
                    **record,
                    "seq": self.seq,
                    "at": self.at,
                    "actor": self.actor,
                    "before": to_json(record["before"]),
                    "after": to_json(record["after"]),
                }
                for record in records
            ],
        )


class ViewCache:
    """The last compiled catalogue and the ``catalog_seq`` it was compiled at.

    Loading it costs a query per table and parsing every gateway's settings;
    a quarantine or a session move must not pay that, nor grow with the
    number of gateways.
    """

    def __init__(self) -> None:
        self.entry: tuple[int, tuple[Catalogue, Topology]] | None = None
        # The same topology over entry scopes (store.scopes.scoped).
        self.scoped: tuple[int, Topology] | None = None
