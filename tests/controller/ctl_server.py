"""A real controller process (uvicorn, as `edgectl controller` runs it) on SQLite,
for tests of what only a real HTTP server shows: limits, timeouts, headers."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgectl.testing.fleet import create_token, toml_table
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


@contextlib.contextmanager
def running(tmp_path: Path, **settings: object) -> Iterator[Server]:
    database = tmp_path / "controller.db"
    url = f"sqlite:///{database}"
    token = create_token(url, "netops-person", "netops")
    port = free_port()
    config = tmp_path / "controller.toml"
    values = {"database_url": url, "port": port, "sweep_interval": 1, **settings}
    config.write_text(toml_table("controller", values))
    argv = [sys.executable, "-m", "edgectl.controller", "controller", "--config", str(config)]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {"EDGECTL_CONTROLLER_CONFIG": str(config)}
    with serving(argv, base, log=log, env=env) as server:
        yield Server(port, server.pid, token)
