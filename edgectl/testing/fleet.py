"""Building an edgectl fleet's files: tokens, the controller's config, each
gateway agent's config, token file and state directory.

The lab (``edgectl lab up``), the netns tier's controller-plus-gateways system
and the agent benchmarks all build "a controller and its gateways' agents";
they differ in where the processes run and how fast the agents poll, which
are arguments here, not copies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Agents that notice a change quickly: the netns tier's timings.
FAST_AGENT: Mapping[str, object] = {
    "poll_wait": 20,
    "backoff_min": 0.1,
    "backoff_max": 0.5,
    "drift_interval": 0.25,
    "report_interval": 2,
    "report_min_gap": 0.5,
}


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, readable by its owner only (tokens, secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return path


def toml_table(table: str, values: Mapping[str, object]) -> str:
    """``[table]`` and its keys; values are strings, numbers, booleans or lists of them
    (JSON's spelling of those is TOML's)."""
    lines = [f"[{table}]", *(f"{key} = {json.dumps(value)}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


def create_token(database_url: str, name: str, role: str) -> str:
    """A bearer token of ``role`` made in the controller's database (migrated first)."""
    from edgectl.controller.auth import Role
    from edgectl.controller.store import Store, tokens

    store = Store.open(database_url, migrate=True)
    try:
        return tokens.create(store, name, Role(role))
    finally:
        store.close()


@dataclass(frozen=True)
class AgentFiles:
    """One gateway agent's files under its home directory."""

    home: Path

    @property
    def config(self) -> Path:
        return self.home / "agent.toml"

    @property
    def token_file(self) -> Path:
        return self.home / "agent.token"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    def write(
        self,
        *,
        controller_url: str | Sequence[str],
        gateway: str,
        netns: str,
        metrics_listen: str = "",
        settings: Mapping[str, object] | None = None,
        token: str | None = None,
    ) -> Path:
        """The agent's config (where it runs and reports, then ``settings``: timings,
        anything else of the ``[agent]`` table) and, given one, its token file.
        ``controller_url``: one URL, or a list (``controller_urls``: fail-over order)."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if token is not None:
            write_private(self.token_file, token + "\n")
        urls = (
            {"controller_url": controller_url}
            if isinstance(controller_url, str)
            else {"controller_urls": list(controller_url)}
        )
        values: dict[str, object] = {
            **urls,
            "gateway": gateway,
            "token_file": str(self.token_file),
            "state_dir": str(self.state_dir),
            "netns": netns,
            "metrics_listen": metrics_listen,
            **(settings or {}),
        }
        write_private(self.config, toml_table("agent", values))
        return self.config
