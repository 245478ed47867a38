"""The shared throwaway PostgreSQL server: over its socket and over TCP."""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa

from edgectl.testing import pgserver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answer(url: str) -> object:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return connection.exec_driver_sql("SELECT current_database()").scalar()
    finally:
        engine.dispose()


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    pgserver.require_for_tests()


def test_databases_over_the_socket_and_gone_after() -> None:
    with pgserver.running() as server:
        url = server.create_database("one")
        assert _answer(url) == "one"
        copy = server.create_database("two", template="one")
        assert _answer(copy) == "two"
        server.drop_database("two")
        with pytest.raises(sa.exc.OperationalError, match="two"):
            _answer(copy)
        root = server.socket_dir.parent
    assert not root.exists()


def test_tcp_listener() -> None:
    port = _free_port()
    with pgserver.running(host="127.0.0.1", port=port) as server:
        url = server.create_database("tcp")
        assert url.startswith(f"postgresql+psycopg://postgres@127.0.0.1:{port}/")
        assert _answer(url) == "tcp"


def test_tcp_clients_log_in_with_a_password_when_asked() -> None:
    port = _free_port()
    with pgserver.running(host="127.0.0.1", port=port, tcp_auth="scram-sha-256") as server:
        server.create_role("app", "s3cret'pw")
        server.create_database("owned", owner="app")
        good = f"postgresql+psycopg://app:s3cret%27pw@127.0.0.1:{port}/owned"
        assert _answer(good) == "owned"
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            _answer(f"postgresql+psycopg://app:wrong@127.0.0.1:{port}/owned")
        # The superuser has no password: over TCP it is refused, its socket still works.
        with pytest.raises(sa.exc.OperationalError):
            _answer(server.url("owned"))
        server.drop_database("owned")
