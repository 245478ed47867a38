"""A throwaway PostgreSQL server for the test session.

initdb + pg_ctl from the Debian packages (``apt-get install postgresql``),
run as the ``postgres`` system user when we are root (PostgreSQL refuses to
run as root), in a temporary directory, listening only on a Unix socket in
that directory.  Stopped and removed when the session ends, whatever happened.
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


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(found[0]).parent if found else None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def running() -> Iterator[str]:
    """Yield an admin DSN (SQLAlchemy form) for a fresh server; always clean up."""
    bindir = binaries()
    if bindir is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="edgectl-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    started = False
    try:
        subprocess.run(
            _as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        options = (
            f"-k {sockets} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            _as_server_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(root / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        started = True
        yield f"postgresql+psycopg://postgres@/postgres?host={sockets}"
    finally:
        if started:
            subprocess.run(
                _as_server_user(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)
