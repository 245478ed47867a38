"""End to end over real HTTP: the CLI bootstraps tokens, uvicorn serves on
127.0.0.1, an analyst quarantines an account and an agent long-polls for it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ctl_backends import PostgresBackend, SqliteBackend

from edgectl.controller.auth import Role
from edgectl.controller.store import Store
from edgectl.controller.store.tokens import create as create_token
from edgectl.testing.processes import free_port, serving
from edgectl.testing.wait import wait_until

ENTRY = ["-m", "edgectl.controller"]  # the controller commands, as `edgectl` runs them


def edgectl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *ENTRY, *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def served(
    backend: SqliteBackend | PostgresBackend, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    url = backend.fresh_url()
    port = free_port()
    config = tmp_path / "controller.toml"
    config.write_text(
        f'[controller]\ndatabase_url = "{url}"\nhost = "127.0.0.1"\nsweep_interval = 0.2\n'
    )
    env = {
        **os.environ,
        "EDGECTL_CONTROLLER_CONFIG": str(config),
        "EDGECTL_CONTROLLER_PORT": str(port),
    }
    # The CLI bootstraps the first token, as an operator would; the rest are
    # made in-process to keep interpreter start-ups (slow on a busy CI box) few.
    made = edgectl("token", "create", "--role", "netops", "--name", "netops-person", env=env)
    assert made.returncode == 0, made.stderr
    tokens = {"netops": made.stdout.strip()}
    store = Store.open(url, migrate=False)
    try:
        for role in (Role.ABUSE, Role.VIEWER):
            tokens[role.value] = create_token(store, f"{role.value}-person", role)
    finally:
        store.close()
    argv = [sys.executable, *ENTRY, "controller"]
    try:
        with serving(argv, f"http://127.0.0.1:{port}", log=tmp_path / "server.log", env=env):
            yield f"http://127.0.0.1:{port}", tokens
    finally:
        if isinstance(backend, PostgresBackend):
            backend.drop(url)


def test_analyst_quarantines_account_and_agent_sees_it(served: tuple[str, dict[str, str]]) -> None:
    base, tokens = served

    def as_(role: str) -> httpx.Client:
        return httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {tokens[role]}"}, timeout=30
        )

    netops, abuse = as_("netops"), as_("abuse")
    assert (
        netops.post(
            "/v1/pools",
            json={"name": "dyn", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]},
        ).status_code
        == 201
    )
    made = netops.post("/v1/gateways", json={"name": "gw-1", "pools": ["dyn"]})
    assert made.status_code == 201
    tokens["agent"] = made.json()["agent_token"]
    agent = as_("agent")
    assert (
        netops.put("/v1/accounts/cust-42/session", json={"ipv4": "100.64.4.2"}).status_code == 200
    )
    revision = agent.get("/v1/gateways/gw-1/desired-state").json()["revision"]

    polled: dict[str, Any] = {}

    def long_poll() -> None:
        response = agent.get(
            "/v1/gateways/gw-1/desired-state", params={"since": revision, "wait": 20}
        )
        polled["body"] = response.json()

    waiter = threading.Thread(target=long_poll)
    waiter.start()
    hold = abuse.post(
        "/v1/quarantines",
        json={"account": "cust-42", "mode": "smtp", "reason": "botnet spam", "ticket": "AB-9"},
    )
    assert hold.status_code == 201, hold.text
    waiter.join(timeout=25)
    assert not waiter.is_alive()
    upserts = polled["body"]["delta"]["quarantines"]["upserts"]
    assert upserts == [{"key": "100.64.4.2", "mode": "smtp", "account": "cust-42"}]

    ident = hold.json()["quarantine"]["id"]
    assert (
        abuse.post(f"/v1/quarantines/{ident}/lift", json={"reason": "cleaned"}).status_code == 200
    )
    assert agent.get("/v1/gateways/gw-1/desired-state").json()["state"]["quarantines"] == []
    trail = as_("viewer").get("/v1/audit", params={"object_type": "quarantine"}).json()
    assert [(e["action"], e["actor"], e["reason"]) for e in trail] == [
        ("quarantine.create", "token:abuse-person", "botnet spam"),
        ("quarantine.lift", "token:abuse-person", "cleaned"),
    ]
    # Expiry without anyone calling: the server's own sweeper lifts it.
    abuse.post(
        "/v1/quarantines",
        json={"account": "cust-42", "mode": "block", "reason": "again", "duration": 1},
    )
    wait_until(
        lambda: not agent.get("/v1/gateways/gw-1/desired-state").json()["state"]["quarantines"],
        timeout=10,
        what="expiry was not enforced",
        interval=0.1,
    )
    assert (
        abuse.get("/v1/quarantines", params={"state": "expired"}).json()[0]["account"] == "cust-42"
    )
    schema = httpx.get(f"{base}/openapi.json").json()
    assert "/v1/quarantines" in schema["paths"]


def test_the_agents_own_client_understands_the_answers(
    served: tuple[str, dict[str, str]],
) -> None:
    """Contract with the agent (its client, not a copy of its parsing): snapshot,
    long-polled delta and status report, over real HTTP."""
    # By name, not a top-level import: the controller's tests import no agent
    # module at collection time (a missing one fails here, never skips).
    client_module = importlib.import_module("edgectl.agent.daemon.client")
    protocol = importlib.import_module("edgectl.agent.daemon.protocol")
    base, tokens = served
    netops = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens['netops']}"})
    netops.post("/v1/pools", json={"name": "dyn", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]})
    agent_token = netops.post("/v1/gateways", json={"name": "gw-1", "pools": ["dyn"]}).json()[
        "agent_token"
    ]
    netops.put("/v1/accounts/cust-1/session", json={"ipv4": "100.64.0.1"})
    agent = client_module.ControllerClient(base, "gw-1", lambda: agent_token)
    try:
        snapshot = agent.desired(None, 0)
        assert isinstance(snapshot, protocol.Snapshot)
        abuse = {"Authorization": f"Bearer {tokens['abuse']}"}
        body = {"account": "cust-1", "mode": "block", "reason": "r", "duration": 600}
        assert httpx.post(f"{base}/v1/quarantines", json=body, headers=abuse).status_code == 201
        delta = agent.desired(snapshot.revision, 5)
        assert isinstance(delta, protocol.Delta)
        assert [str(q.key) for q in delta.delta.quarantines.upserts] == ["100.64.0.1"]
        agent.report(delta.revision, {"elements": 1})
        gateway = netops.get("/v1/gateways/gw-1").json()
        assert gateway["converged"] is True
    finally:
        agent.close()
        netops.close()
