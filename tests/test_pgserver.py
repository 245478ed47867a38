"""The shared throwaway PostgreSQL server: over its socket and over TCP."""

from __future__ import annotations

import os
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
    if pgserver.binaries() is None:
        message = "PostgreSQL server binaries missing (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run it, not skip it")
        pytest.skip(message)


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
