"""The notice portal's pages, in process: the portal app talks to a real
controller app (ASGI transport, so only REST), with a portal-role token."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ctl_support import Api, World
from starlette.testclient import TestClient

from edgectl.portal import client as portal_client_module
from edgectl.portal.app import ACK_PATH, CAPTIVE_PATH, NOTICE_PATH, create_app
from edgectl.portal.client import Controller, ControllerUnavailable
from edgectl.portal.config import PortalConfig
from edgectl.portal.pages import SHIPPED, Pages, TemplateRefused, choose_language, lint_text

ALICE = "100.64.0.10"


def portal_config(api: Api) -> PortalConfig:
    return PortalConfig(
        controller_url="http://controller",
        token=api.tokens["portal"],
        public_url="http://portal.isp.example/",
        support="0120-000-000",
    )


def portal_client(api: Api, address: str) -> TestClient:
    config = portal_config(api)
    transport = httpx.ASGITransport(app=api.client.app)
    app = create_app(config, Pages(None, {}, config.support), Controller(config, transport))
    return TestClient(app, client=(address, 40000))


@pytest.fixture
def held(api: Api, world: World) -> Iterator[TestClient]:
    api.put("/v1/accounts/alice/session", {"ipv4": ALICE})
    body = {
        "account": "alice",
        "mode": "walled-garden",
        "reason": "internal: C2 beacon to 203.0.113.66 seen by analyst kim",
        "category": "botnet",
        "ticket": "ABUSE-4242",
    }
    api.post("/v1/quarantines", body)
    with portal_client(api, ALICE) as client:
        yield client


def code_of(html: str) -> str:
    found = re.search(r'class="code">([A-Z0-9]+)<', html)
    assert found, html
    return found.group(1)


def test_the_notice_in_both_languages(held: TestClient) -> None:
    page = held.get("/some/page", headers={"Host": "example.org", "Accept-Language": "ja,en;q=0.5"})
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    html = page.text
    assert 'lang="ja"' in html and "ボットネット" in html
    assert "alice" in html and "ABUSE-4242" in html and "example.org" in html
    assert "analyst" not in html  # the analyst's free text never reaches the subscriber
    english = held.get("/", headers={"Accept-Language": "en-GB, ja;q=0.3"}).text
    assert 'lang="en"' in english and "botnet" in english and "ABUSE-4242" in english
    assert code_of(english) != code_of(html)  # a code per notice shown


def test_a_blind_post_cannot_release_and_the_code_can(api: Api, held: TestClient) -> None:
    hold = api.get("/v1/accounts/alice")["quarantine"]
    blind = held.post(ACK_PATH, data={"hold": str(hold["id"]), "release": "1"})
    assert blind.status_code == 400
    wrong = held.post(ACK_PATH, data={"hold": str(hold["id"]), "code": "ZZZZZZ", "release": "1"})
    assert wrong.status_code == 400
    assert api.get("/v1/accounts/alice")["quarantine"]["state"] == "active"
    code = code_of(held.get("/", headers={"Accept-Language": "en"}).text)
    done = held.post(
        ACK_PATH,
        data={"hold": str(hold["id"]), "code": code, "release": "1"},
        headers={"Accept-Language": "en"},
    )
    assert done.status_code == 200 and 'class="released"' in done.text
    assert api.get("/v1/accounts/alice")["quarantine"] is None
    assert 'class="clear"' in held.get("/").text


def test_after_acknowledging_pages_are_a_reminder(api: Api, held: TestClient) -> None:
    """RFC 6108: acknowledgement stops further immediate notices.  The garden
    stays (pages still come here), the full notice is one link away."""
    hold = api.get("/v1/accounts/alice")["quarantine"]
    code = code_of(held.get("/", headers={"Accept-Language": "en"}).text)
    ack = held.post(ACK_PATH, data={"hold": str(hold["id"]), "code": code})
    assert ack.status_code == 200 and 'class="acknowledged"' in ack.text
    assert NOTICE_PATH in ack.text
    for language in ("en", "ja"):
        page = held.get("/news", headers={"Host": "news.example", "Accept-Language": language})
        html = page.text
        assert page.status_code == 200 and 'class="reminder"' in html, html
        assert 'class="code"' not in html and "<form" not in html
        assert "ABUSE-4242" in html and "news.example" in html and NOTICE_PATH in html
    full = held.get(NOTICE_PATH, headers={"Accept-Language": "en"}).text
    assert 'class="reminder"' not in full
    form = {"hold": str(hold["id"]), "code": code_of(full), "release": "1"}
    done = held.post(ACK_PATH, data=form)
    assert done.status_code == 200 and 'class="released"' in done.text
    kinds = [e["kind"] for e in api.get("/v1/accounts/alice/history")["notices"]]
    reminded = ["shown", "reminded", "reminded"]
    assert kinds == ["released", "acknowledged", *reminded, "acknowledged", "shown"]


def test_captive_api(api: Api, held: TestClient) -> None:
    answer = held.get(CAPTIVE_PATH)
    assert answer.headers["content-type"].startswith("application/captive+json")
    assert answer.json() == {"captive": True, "user-portal-url": "http://portal.isp.example/"}
    api.post(
        "/v1/quarantines",
        {"account": "alice", "mode": "walled-garden", "reason": "x", "duration": 3600},
    )
    left = held.get(CAPTIVE_PATH).json()["seconds-remaining"]
    assert 3500 < left <= 3600
    with portal_client(api, "100.64.0.99") as stranger:
        assert stranger.get(CAPTIVE_PATH).json() == {"captive": False}


class Counted(httpx.AsyncBaseTransport):
    """The controller app over ASGI, counting the portal's requests (or failing them)."""

    def __init__(self, app: object, fail: bool = False) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.fail = fail
        self.bodies: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        if self.fail:
            raise httpx.ConnectError("controller down", request=request)
        return await self.inner.handle_async_request(request)


def test_notices_arriving_together_go_in_one_request(api: Api, held: TestClient) -> None:
    api.put("/v1/accounts/bob/session", {"ipv4": "100.64.0.11"})
    transport = Counted(api.client.app)
    addresses = [ALICE] * 20 + ["100.64.0.11"] * 5

    async def together() -> list[dict[str, object] | None]:
        controller = Controller(portal_config(api), transport)
        try:
            return await asyncio.gather(*(controller.notice(a, "en", None) for a in addresses))
        finally:
            await controller.close()

    answers = asyncio.run(together())
    assert [a is not None for a in answers] == [True] * 20 + [False] * 5
    assert len({a["code"] for a in answers if a}) == 20  # each page its own code
    assert 1 <= len(transport.bodies) <= portal_client_module.SENDERS
    shown = [e for e in api.get("/v1/accounts/alice/history")["notices"] if e["kind"] == "shown"]
    assert len(shown) == 20  # every notice logged before its page went out


def test_a_failed_batch_fails_every_page_in_it_and_the_queue_is_bounded(
    api: Api, held: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(portal_client_module, "WAITING", 8)

    async def together() -> list[object]:
        controller = Controller(portal_config(api), Counted(api.client.app, fail=True))
        try:
            pages = [controller.notice(ALICE, "en", None) for _ in range(12)]
            return await asyncio.wait_for(asyncio.gather(*pages, return_exceptions=True), 10)
        finally:
            await controller.close()

    answers = asyncio.run(together())
    assert all(isinstance(a, ControllerUnavailable) for a in answers)
    refused = [a for a in answers if "already wait" in str(a)]
    assert len(refused) == 4  # beyond 8 waiting: "busy" at once, nothing queued


@pytest.mark.parametrize(
    ("header", "wanted"),
    [
        (None, "ja"),
        ("en", "en"),
        ("fr, en;q=0.8, ja;q=0.9", "ja"),
        ("en-US,en;q=0.9,ja;q=0.8", "en"),
        ("ja-JP", "ja"),
        ("de", "ja"),
        ("en;q=0", "ja"),
        ("en;q=abc, ja", "ja"),
    ],
)
def test_language_by_accept_language(header: str | None, wanted: str) -> None:
    assert choose_language(header, "ja") == wanted


def test_the_lint_refuses_templates_asking_for_a_password(tmp_path: Path) -> None:
    assert lint_text('<form><input type="password" name="p"></form>')
    assert lint_text("<INPUT TYPE=Password name=p>")
    assert lint_text("<form>お客様のパスワードを入力<input name=x></form>")
    assert lint_text("<form method=post>Your password: <input name=x></form>")
    # Advice outside a form is fine: the shipped notice tells people to change them.
    assert lint_text("<p>Change your passwords.</p><form><input name=code></form>") == []
    for path in SHIPPED.glob("*.html"):
        assert lint_text(path.read_text()) == [], path
    (tmp_path / "notice.en.html").write_text('<form><input type="password"></form>')
    with pytest.raises(TemplateRefused, match=r"notice\.en\.html"):
        Pages(tmp_path, {}, "")


def test_an_operator_template_overrides_the_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "clear.en.html").write_text("<p>All good at {{ support }}</p>")
    pages = Pages(tmp_path, {"botnet": {"en": "Operator text"}}, "call 110")
    assert pages.render("clear", "en") == "<p>All good at call 110</p>"
    assert "お知らせはありません" in pages.render("clear", "ja")
    assert pages.category_text("botnet", "en") == "Operator text"
    assert "ボットネット" in pages.category_text("botnet", "ja")
    assert pages.category_text("unknown", "en") == pages.category_text(None, "en")
