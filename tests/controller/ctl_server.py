"""A real controller process (uvicorn, as `edgectl controller` runs it) on SQLite,
for tests of what only a real HTTP server shows: limits, timeouts, headers."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgectl.controller.auth import Role
from edgectl.controller.store import Store, tokens
from edgectl.testing.processes import free_port, serving


@dataclass
class Server:
    port: int
    pid: int
    token: str  # netops

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss(self) -> int:
        """The process's peak resident memory so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


@contextlib.contextmanager
def running(tmp_path: Path, **settings: object) -> Iterator[Server]:
    database = tmp_path / "controller.db"
    url = f"sqlite:///{database}"
    store = Store.open(url, migrate=True)
    try:
        token = tokens.create(store, "netops-person", Role.NETOPS)
    finally:
        store.close()
    port = free_port()
    config = tmp_path / "controller.toml"
    lines = [f'database_url = "{url}"', f"port = {port}", "sweep_interval = 1"]
    lines += [f"{name} = {_toml(value)}" for name, value in settings.items()]
    config.write_text("[controller]\n" + "\n".join(lines) + "\n")
    argv = [sys.executable, "-m", "edgectl.controller", "controller", "--config", str(config)]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {"EDGECTL_CONTROLLER_CONFIG": str(config)}
    with serving(argv, base, log=log, env=env) as server:
        yield Server(port, server.pid, token)
