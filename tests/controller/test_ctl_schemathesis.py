"""Schemathesis against the served OpenAPI document, over real HTTP:
no request, however malformed, gets a 500, and no response breaks its own schema."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ctl_backends import PostgresBackend, SqliteBackend
from ctl_support import settings_for
from hypothesis import HealthCheck, given, settings

from edgectl.controller.app import create_app
from edgectl.controller.auth import Role
from edgectl.controller.store import Store, tokens
from edgectl.testing.wait import wait_until

try:
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.result import Ok
    from schemathesis.specs.openapi.checks import response_schema_conformance
except ImportError:  # not yet a declared test dependency
    if os.environ.get("CI"):
        raise
    pytest.skip("schemathesis is not installed", allow_module_level=True)

import uvicorn

EXAMPLES = int(os.environ.get("EDGECTL_SCHEMATHESIS_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def server(backend: SqliteBackend | PostgresBackend) -> Iterator[tuple[str, str]]:
    url = backend.fresh_url()
    store = Store.open(url, migrate=False)
    token = tokens.create(store, "fuzz", Role.NETOPS)
    app = create_app(settings_for(store), store, sweep=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "uvicorn exited"
        return bool(instance.started)

    wait_until(started, timeout=20, what="uvicorn did not start")
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    # Some objects to find, so that not every generated request is a 404.
    with httpx.Client(base_url=base, headers=headers) as http:
        http.post(
            "/v1/pools", json={"name": "dyn", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]}
        )
        http.post("/v1/gateways", json={"name": "gw", "pools": ["dyn"]})
        http.put("/v1/accounts/alice/session", json={"ipv4": "100.64.0.1"})
        http.post("/v1/quarantines", json={"account": "alice", "mode": "smtp", "reason": "r"})
    try:
        yield base, token
    finally:
        instance.should_exit = True
        thread.join(timeout=20)
        store.close()
        if isinstance(backend, PostgresBackend):
            backend.drop(url)


def test_no_server_errors_and_responses_match_schema(server: tuple[str, str]) -> None:
    base, token = server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    failures: list[str] = []
    operations = []
    for result in schema.get_all_operations():
        # An operation schemathesis cannot even load is itself a schema defect.
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    assert len(operations) > 30
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            if case.query and "wait" in case.query:
                case.query["wait"] = 0  # long-poll is tested elsewhere; keep this fast
            case.call_and_validate(
                base_url=base,
                headers={"Authorization": f"Bearer {token}"},
                checks=[not_a_server_error, response_schema_conformance],
                timeout=30,
            )

        try:
            run()
        except Exception as error:  # collect every operation's failure, then report
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert not failures, "\n\n".join(failures)
