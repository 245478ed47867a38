"""The controller's database for the netns tier: its SQLite file, or a database
on a throwaway PostgreSQL server (edgectl/testing/pgserver.py).

A module runs its controller on both with ``pytestmark = BOTH_BACKENDS``: its
module-scoped fixtures, and so its tests, run once per backend.  Every other
module gets ``None`` (the builder's own SQLite file).  The server starts only
when a PostgreSQL run first needs it, once per session.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from edgectl.testing import pgserver

BACKENDS = ("sqlite", "postgresql")
BOTH_BACKENDS = pytest.mark.parametrize(
    "controller_backend", BACKENDS, indirect=True, scope="module"
)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    pgserver.require_for_tests()
    with pgserver.running() as server:
        yield server


@pytest.fixture(scope="module")
def controller_backend(request: pytest.FixtureRequest) -> str:
    backend: str = getattr(request, "param", "sqlite")
    return backend


@pytest.fixture(scope="module")
def controller_database(
    controller_backend: str, request: pytest.FixtureRequest
) -> Iterator[str | None]:
    """None for SQLite (the builder's file); else a fresh PostgreSQL database's URL."""
    if controller_backend == "sqlite":
        yield None
        return
    server: pgserver.Server = request.getfixturevalue("pg_server")
    name = f"edgectl_netns_{secrets.token_hex(4)}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)
