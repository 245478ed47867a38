"""/docs without third-party code (issue 9, item 11) and the headers every
answer carries (item 10)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from ctl_support import Api, World, settings_for
from fastapi.testclient import TestClient

from edgectl.controller.app import create_app
from edgectl.controller.store import Store

REFERENCE = re.compile(rb"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_reference_no_other_origin_and_assets_are_served(api: Api, page: str) -> None:
    html = api.call("GET", page, role=None, expect=200).content
    assert b"http://" not in html and b"https://" not in html, html
    references = [ref.decode() for ref in REFERENCE.findall(html)]
    assert references, html
    scripts = [ref for ref in references if ref.endswith(".js")]
    assert scripts, references
    for reference in references:
        assert reference.startswith("/") and not reference.startswith("//"), reference
        asset = api.call("GET", reference, role=None, expect=200)
        if reference.endswith(".js"):
            assert len(asset.content) > 100_000  # the real bundle, not a stub
            assert "javascript" in asset.headers["content-type"]


@pytest.fixture
def without_docs(store: Store) -> Iterator[TestClient]:
    app = create_app(settings_for(store, docs=False), store, sweep=False)
    with TestClient(app) as client:
        yield client


def test_docs_can_be_turned_off(without_docs: TestClient) -> None:
    for path in ("/docs", "/redoc", "/docs/assets/swagger-ui-bundle.js", "/docs/oauth2-redirect"):
        assert without_docs.get(path).status_code == 404, path
    assert without_docs.get("/openapi.json").status_code == 200


def test_credentials_are_never_cached_and_nothing_is_sniffed(api: Api, world: World) -> None:
    made = api.call("POST", "/v1/gateways", json={"name": "gw-c"}, expect=201)
    rotated = api.call("POST", "/v1/gateways/gw-c/token", expect=200)
    for response in (made, rotated):
        assert "agent_token" in response.json()
        assert response.headers["cache-control"] == "no-store"
    answers = [
        made,
        rotated,
        api.call("GET", "/healthz", role=None, expect=200),
        api.call("GET", "/v1/pools", role=None, expect=401),
        api.call("GET", "/v1/pools/nope", role="viewer", expect=404),
        api.call("POST", "/v1/pools", json={"name": 1}, expect=422),
        api.call("GET", "/docs", role=None, expect=200),
        api.call("GET", "/openapi.json", role=None, expect=200),
    ]
    for response in answers:
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url
        assert response.headers["cache-control"] == "no-store", response.request.url
