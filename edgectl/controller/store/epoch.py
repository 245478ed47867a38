"""The store's epoch: which history a revision number belongs to.

Revisions are one counter in the database, so a database restored from a
backup (or replaced) counts again from an older number: revision 120 may
then name a state an agent never saw, while the agent holds the lost
revision 120.  Agents hold the epoch with their cursor; a cursor of another
epoch is answered with a snapshot (``desired``).  The epoch changes when
an operator says so (``edgectl controller new-epoch``, after a restore) or
when an agent's cursor is found ahead of its gateway's revision, which no
cursor of this history can be: the store was restored under it.
"""

from __future__ import annotations

import logging
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from edgectl.controller.store import schema as t
from edgectl.controller.store.core import Store

log = logging.getLogger(__name__)


def fresh() -> str:
    return secrets.token_hex(8)


def current(connection: Connection) -> str | None:
    return connection.execute(
        sa.select(t.counter.c.epoch).where(t.counter.c.id == 1)
    ).scalar_one_or_none()


def read(store: Store) -> str | None:
    with store.read() as connection:
        return current(connection)


def rotate(store: Store, actor: str, reason: str, replacing: str | None = None) -> str:
    """A new epoch; with ``replacing``, only if the epoch is still that one.

    Several requests may find the same restore at once (every agent whose
    cursor is ahead): the first replaces the epoch, the rest find it
    replaced already and leave it, so agents are sent one snapshot each.
    """
    with store.write(actor) as change:
        before = current(change.connection)
        if replacing is not None and before != replacing:
            return str(before)
        epoch = fresh()
        change.connection.execute(
            sa.update(t.counter).where(t.counter.c.id == 1).values(epoch=epoch)
        )
        change.audit("store.epoch", "store", "epoch", before, epoch, reason)
        change.everyone = True  # other controller processes wake their long-polls
    log.warning("store epoch %s -> %s: %s", before, epoch, reason)
    return epoch
