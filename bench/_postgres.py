"""A throwaway PostgreSQL server for a benchmark, with durable commits.

Unlike the test suite's server (``tests/controller/ctl_pgserver.py``: fsync
off, for speed), this one keeps PostgreSQL's defaults for durability
(``fsync``, ``synchronous_commit``, ``full_page_writes`` on), so a figure
compares with SQLite's ``synchronous=FULL``.  initdb + pg_ctl from the Debian
packages (``/usr/lib/postgresql/*/bin``), as the ``postgres`` user when run as
root, in a temporary directory, Unix socket only; stopped and removed on exit.
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
from pathlib import Path

import sqlalchemy as sa


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if not found:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/pg_ctl (apt-get install postgresql)")
    return Path(found[0]).parent


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def server() -> Iterator[str]:
    """Yield the admin URL (SQLAlchemy form, no database) of a fresh server."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="edgectl-bench-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    started = False
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        subprocess.run(_as_server_user([*initdb, "-E", "UTF8"]), check=True, capture_output=True)
        options = f"-k {sockets} -c listen_addresses='' -c max_connections=100"
        start = [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log")]
        subprocess.run(_as_server_user([*start, "-w", "start"]), check=True, capture_output=True)
        started = True
        yield f"postgresql+psycopg://postgres@/{{database}}?host={sockets}"
    finally:
        if started:
            stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            subprocess.run(_as_server_user(stop), capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def create_database(url_template: str, name: str) -> str:
    """``CREATE DATABASE name``; returns its URL."""
    admin = sa.create_engine(url_template.format(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return url_template.format(database=name)
