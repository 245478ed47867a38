"""Alembic environment: always handed a connection by ``Database.migrate``."""

from __future__ import annotations

from alembic import context

from edgectl.controller.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with `edgectl controller migrate`, which passes a connection"
    )
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
