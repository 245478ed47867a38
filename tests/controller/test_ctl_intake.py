"""The intake middleware in-process, on both stores: no body reaches a handler
without a valid token or past max_body_bytes (issue 9, item 6; the real-HTTP
side, memory and early answers, is test_ctl_http_limits.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from ctl_support import Api, World, settings_for
from fastapi.testclient import TestClient

from edgectl.controller.app import create_app
from edgectl.controller.store import Store

CAP = 1024


@pytest.fixture
def capped(store: Store) -> Iterator[Api]:
    app = create_app(settings_for(store, max_body_bytes=CAP), store, sweep=False)
    with TestClient(app) as client:
        yield Api(client, store)


def _body(size: int) -> bytes:
    """A quarantine request of exactly ``size`` bytes (the reason pads it)."""
    base = {"account": "cust-1", "mode": "smtp", "reason": ""}
    padding = size - len(json.dumps(base).encode())
    return json.dumps({**base, "reason": "r" * padding}).encode()


def test_a_body_needs_a_valid_token_before_it_is_read(capped: Api) -> None:
    World(capped)
    body = _body(200)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        response = capped.client.post(
            "/v1/quarantines", content=body, headers={**headers, "content-type": "application/json"}
        )
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["connection"] == "close"
    # The token is checked before the body is parsed: malformed JSON is no 422.
    response = capped.client.post(
        "/v1/pools", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401, response.text
    assert capped.get("/v1/quarantines", role="viewer") == []


def test_the_cap_is_exact(capped: Api) -> None:
    World(capped)
    headers = {"content-type": "application/json"}
    over = capped.call(
        "POST", "/v1/quarantines", role="abuse", content=_body(CAP + 1), headers=headers
    )
    assert over.status_code == 413, over.text
    assert "max_body_bytes" in over.json()["detail"]
    assert capped.get("/v1/quarantines", role="viewer") == []
    at = capped.call("POST", "/v1/quarantines", role="abuse", content=_body(CAP), headers=headers)
    assert at.status_code == 201, at.text
