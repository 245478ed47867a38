"""A throwaway PostgreSQL server: initdb in a temporary directory, started,
handed out as URLs, stopped and removed whatever happened.

The binaries are Debian's (``apt-get install postgresql``,
``/usr/lib/postgresql/*/bin``).  PostgreSQL refuses to run as root, so as
root the server runs as the ``postgres`` system user (``runuser``) and the
temporary directory is handed to it.  It listens on a Unix socket in that
directory (reachable from any network namespace: the socket is a file) and,
when ``host`` is given, on that address's TCP ``port`` too.  Every client is
trusted (the server lives for one test session or one benchmark), unless
``tcp_auth`` names another method for TCP clients: ``"scram-sha-256"`` makes
them log in with a role's password (``create_role``), as a deployed
controller does; the superuser keeps the trusted socket.

``netns`` starts the server inside that network namespace (root only), so
``host`` can be an address of a test network and nothing else reaches it.

``durable=False`` (tests) turns fsync, synchronous commit and full-page
writes off for speed; ``durable=True`` (benchmarks) keeps PostgreSQL's
defaults, so a figure compares with SQLite's ``synchronous=FULL``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

ADMIN_DATABASE = "postgres"


def binaries() -> Path | None:
    """The newest installed server's bin directory, or None when none is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(found[0]).parent if found else None


def require_for_tests() -> None:
    """In a pytest session: skip when no server is installed, or fail under CI,
    where the PostgreSQL tests must run."""
    import pytest  # test support only: the lab and benchmarks never call this

    if binaries() is None:
        message = "PostgreSQL server binaries missing (apt-get install postgresql)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message + "; CI must run the PostgreSQL tests, not skip them")
        pytest.skip(message)


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str], netns: str | None = None) -> None:
    argv = _as_server_user(command)
    if netns is not None:
        # pg_ctl forks the postmaster from here: it stays in the namespace.
        argv = ["ip", "netns", "exec", netns, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr.strip()}"
        )


@dataclass(frozen=True)
class Server:
    """A running server: its socket directory and, if asked for, its TCP address."""

    socket_dir: Path
    host: str | None = None
    port: int = 5432

    def url(self, database: str = ADMIN_DATABASE) -> str:
        """SQLAlchemy URL of ``database`` as the superuser, over TCP when the
        server listens on TCP, else over the Unix socket."""
        if self.host is not None:
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"postgresql+psycopg://postgres@{host}:{self.port}/{database}"
        return self.socket_url(database)

    def socket_url(self, database: str = ADMIN_DATABASE) -> str:
        """SQLAlchemy URL of ``database`` as the superuser over the Unix socket
        (from any network namespace: the socket is a file)."""
        # The socket's file name carries the port (.s.PGSQL.<port>).
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    @property
    def admin_url(self) -> str:
        return self.url(ADMIN_DATABASE)

    def _admin(self, statement: str) -> None:
        # Over the socket: it works whatever the TCP address's namespace.
        url = self.socket_url(ADMIN_DATABASE)
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def create_database(
        self, name: str, template: str | None = None, owner: str | None = None
    ) -> str:
        """``CREATE DATABASE name`` (a copy of ``template``, owned by ``owner``, if
        given); returns its URL."""
        copy = f' TEMPLATE "{template}"' if template else ""
        copy += f' OWNER "{owner}"' if owner else ""
        self._admin(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def create_role(self, name: str, password: str) -> None:
        """A login role with ``password`` (stored as PostgreSQL's hash of it)."""
        quoted = password.replace("'", "''")
        self._admin(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{quoted}'")

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, closing its connections."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running(
    *,
    durable: bool = False,
    host: str | None = None,
    port: int = 5432,
    max_connections: int = 200,
    tcp_auth: str = "trust",
    netns: str | None = None,
) -> Iterator[Server]:
    """Start a fresh server; yield it; stop it and remove its directory on exit."""
    bindir = binaries()
    if bindir is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/pg_ctl (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="edgectl-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    started = False
    try:
        _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        )
        listen = host or ""
        options = f"-k {sockets} -c listen_addresses='{listen}' -c port={port}"
        options += f" -c max_connections={max_connections}"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        if host is not None:
            # initdb -A trust covers the loopback addresses only; a server
            # reached from another namespace needs its address covered too.
            # The first matching line wins: every TCP client (loopback
            # included) gets tcp_auth, the socket stays trusted.
            (data / "pg_hba.conf").write_text(f"local all all trust\nhost all all all {tcp_auth}\n")
        log = str(root / "log")
        _run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start"],
            netns,
        )
        started = True
        yield Server(socket_dir=sockets, host=host, port=port)
    finally:
        if started:
            stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            subprocess.run(_as_server_user(stop), capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
