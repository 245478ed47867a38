"""Fixtures: every API test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from ctl_backends import PostgresBackend, SqliteBackend
from ctl_support import Api, World, settings_for
from fastapi.testclient import TestClient

from edgectl.controller.app import create_app
from edgectl.controller.store import Store
from edgectl.testing import pgserver

Backend = SqliteBackend | PostgresBackend


def _postgres_dsn(dsn: str) -> str:
    for plain in ("postgresql://", "postgres://"):
        if dsn.startswith(plain):
            return "postgresql+psycopg://" + dsn.removeprefix(plain)
    return dsn


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield SqliteBackend(tmp_path_factory.mktemp("sqlite"))
        return
    dsn = os.environ.get("EDGECTL_TEST_PG_DSN")
    if dsn:
        given = PostgresBackend(_postgres_dsn(dsn))
        yield given
        given.close()
        return
    if pgserver.binaries() is None:
        message = "PostgreSQL server binaries missing (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the PostgreSQL suite, not skip it")
        pytest.skip(message)
    with pgserver.running() as server:
        started = PostgresBackend(server.admin_url)
        try:
            yield started
        finally:
            started.close()


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    url = backend.fresh_url()
    opened = Store.open(url, migrate=False)
    yield opened
    opened.close()
    if isinstance(backend, PostgresBackend):
        backend.drop(url)


@pytest.fixture
def api(store: Store) -> Iterator[Api]:
    app = create_app(settings_for(store), store, sweep=False)
    with TestClient(app) as client:
        yield Api(client, store)


@pytest.fixture
def world(api: Api) -> World:
    return World(api)
