"""The web console through the ASGI app (the browser tests are in netns-tests/):
sign-in and its cookie, CSRF on every form, roles, the pages' data and refusals."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from ctl_support import Api, World, settings_for
from fastapi.testclient import TestClient

from edgectl.controller.app import create_app
from edgectl.controller.store import Store, tokens
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import now

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html[:500]
    return found.group(1)


def sign_in(client: TestClient, token: str) -> TestClient:
    page = client.get("/console/signin")
    assert page.status_code == 200
    answer = client.post(
        "/console/signin",
        data={"csrf": csrf_of(page.text), "token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/search"
    return client


@pytest.fixture
def desk(api: Api, world: World) -> Api:
    for n in range(1, 4):
        api.put(f"/v1/accounts/cust-{n}/session", {"ipv4": f"100.64.1.{n}"})
    api.agent_a = world.agent_a  # type: ignore[attr-defined]
    return api


@pytest.fixture
def browser(desk: Api) -> Iterator[TestClient]:
    """A second client on the same app: its own cookie jar, like a browser."""
    with TestClient(desk.client.app) as client:
        yield client


def _form(page: str, **fields: str) -> dict[str, str]:
    return {"csrf": csrf_of(page), **fields}


def test_session_cookie_flags_and_no_token_in_pages(desk: Api, browser: TestClient) -> None:
    page = browser.get("/console/signin")
    assert "edgectl_signin" in page.headers["set-cookie"]
    answer = browser.post(
        "/console/signin",
        data={"csrf": csrf_of(page.text), "token": desk.tokens["abuse"]},
        follow_redirects=False,
    )
    cookie = [c for c in answer.headers.get_list("set-cookie") if c.startswith("edgectl_console=")]
    assert cookie, answer.headers
    flags = cookie[0].lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
    assert "secure" not in flags  # plain HTTP on loopback: a Secure cookie would not come back
    for path in (
        "/console/search?q=100.64.1.1",
        "/console/accounts/cust-1",
        "/console/quarantines",
        "/console/gateways",
        "/console/audit",
        "/console/offenders",
    ):
        shown = browser.get(path)
        assert shown.status_code == 200, (path, shown.text[:300])
        assert desk.tokens["abuse"] not in shown.text
        assert "token:test-abuse" in shown.text  # who is signed in, by name


def test_secure_cookie_behind_tls(store: Store) -> None:
    app = create_app(settings_for(store, allow_plain_http=True), store, sweep=False)
    token = tokens.create(store, "tls-person", tokens.Role.ABUSE)
    with TestClient(app, base_url="https://testserver") as client:
        page = client.get("/console/signin")
        answer = client.post(
            "/console/signin",
            data={"csrf": csrf_of(page.text), "token": token},
            follow_redirects=False,
        )
        cookie = [
            c for c in answer.headers.get_list("set-cookie") if c.startswith("edgectl_console=")
        ]
        assert "secure" in cookie[0].lower()


def test_sign_in_refusals(desk: Api, browser: TestClient) -> None:
    page = browser.get("/console/signin")
    wrong = browser.post("/console/signin", data={"csrf": csrf_of(page.text), "token": "edg_nope"})
    assert wrong.status_code == 401 and "token: not accepted" in wrong.text
    no_csrf = browser.post("/console/signin", data={"token": desk.tokens["abuse"]})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    agent = desk.post("/v1/gateways", {"name": "gw-c", "pools": []})["agent_token"]
    page = browser.get("/console/signin")
    refused = browser.post("/console/signin", data={"csrf": csrf_of(page.text), "token": agent})
    assert refused.status_code == 401
    assert browser.get("/console/search", follow_redirects=False).headers["location"] == (
        "/console/signin"
    )


def test_quarantine_with_confirmation_then_lift(desk: Api, browser: TestClient) -> None:
    sign_in(browser, desk.tokens["abuse"])
    found = browser.get("/console/search", params={"q": "100.64.1.2"})
    assert found.status_code == 200 and "/console/accounts/cust-2" in found.text
    account = browser.get("/console/accounts/cust-2")
    assert 'id="quarantine-form"' in account.text
    fields = _form(account.text, mode="smtp", reason="spam run", ticket="AB-7", duration="86400")
    confirm = browser.post("/console/accounts/cust-2/quarantine", data=fields)
    assert confirm.status_code == 200 and "Confirm quarantine" in confirm.text
    assert desk.get("/v1/quarantines", params={"account": "cust-2"}) == []  # not yet
    done = browser.post(
        "/console/accounts/cust-2/quarantine",
        data={**fields, "confirm": "yes"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and "notice=quarantined" in done.headers["location"]
    held = desk.get("/v1/quarantines", params={"account": "cust-2"})
    assert [(h["mode"], h["actor"], h["ticket"], h["reason"]) for h in held] == [
        ("smtp", "token:test-abuse", "AB-7", "spam run")
    ]
    page = browser.get("/console/accounts/cust-2")
    assert 'id="lift-form"' in page.text and "quarantine.create" in page.text  # the timeline
    lifted = browser.post(
        f"/console/quarantines/{held[0]['id']}/lift",
        data=_form(page.text, reason="customer cleaned up"),
        follow_redirects=False,
    )
    assert lifted.status_code == 303
    assert desk.get(f"/v1/quarantines/{held[0]['id']}")["state"] == "lifted"
    trail = desk.get("/v1/audit", params={"object_type": "quarantine"})
    assert [e["reason"] for e in trail][-1] == "customer cleaned up"


def test_posts_without_csrf_are_refused(desk: Api, browser: TestClient) -> None:
    sign_in(browser, desk.tokens["abuse"])
    body = {"mode": "block", "reason": "x", "confirm": "yes"}
    forged = browser.post("/console/accounts/cust-1/quarantine", data=body)
    assert forged.status_code == 403 and "CSRF" in forged.text
    wrong = browser.post("/console/accounts/cust-1/quarantine", data={**body, "csrf": "guess"})
    assert wrong.status_code == 403
    assert desk.get("/v1/quarantines", params={"account": "cust-1"}) == []
    signout = browser.post("/console/signout", data={})
    assert signout.status_code == 403  # not even sign-out without the token
    # A JSON body with the cookie is not a form either.
    assert browser.post("/console/accounts/cust-1/quarantine", json=body).status_code == 415


def test_viewer_sees_no_controls_and_a_forged_post_is_403(desk: Api, browser: TestClient) -> None:
    sign_in(browser, desk.tokens["viewer"])
    page = browser.get("/console/accounts/cust-1")
    assert page.status_code == 200
    assert '<form method="post" action="/console/accounts' not in page.text
    assert "lift-form" not in page.text and "quarantine-form" not in page.text
    forged = browser.post(
        "/console/accounts/cust-1/quarantine",
        data=_form(page.text, mode="block", reason="x", confirm="yes"),
    )
    assert forged.status_code == 403 and "role viewer may not do this" in forged.text
    assert desk.get("/v1/quarantines", params={"account": "cust-1"}) == []
    step_one = browser.post(
        "/console/accounts/cust-1/quarantine", data=_form(page.text, mode="block", reason="x")
    )
    assert step_one.status_code == 403 and "Confirm" not in step_one.text
    hold = desk.post(
        "/v1/quarantines", {"account": "cust-1", "mode": "smtp", "reason": "r"}, role="abuse"
    )
    lift = browser.post(
        f"/console/quarantines/{hold['quarantine']['id']}/lift",
        data=_form(page.text, reason="nope"),
    )
    assert lift.status_code == 403


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"mode": "smtp", "reason": ""}, "reason"),
        ({"mode": "laser", "reason": "r"}, "mode"),
        ({"mode": "smtp", "reason": "r", "duration": "soon"}, "duration"),
        ({"mode": "smtp", "reason": "r", "duration": "999999999999"}, "duration"),
        ({"mode": "smtp", "reason": "r", "ticket": "x" * 300}, "ticket"),
    ],
)
def test_bad_form_input_names_the_field(
    desk: Api, browser: TestClient, fields: dict[str, str], named: str
) -> None:
    sign_in(browser, desk.tokens["abuse"])
    page = browser.get("/console/accounts/cust-1")
    answer = browser.post(
        "/console/accounts/cust-1/quarantine", data=_form(page.text, confirm="yes", **fields)
    )
    assert answer.status_code == 422, answer.text[:300]
    assert named in answer.text


def test_revoked_token_ends_its_sessions(desk: Api, browser: TestClient) -> None:
    sign_in(browser, desk.tokens["abuse"])
    assert browser.get("/console/search").status_code == 200
    tokens.revoke(desk.store, "test-abuse")
    gone = browser.get("/console/search", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/console/signin"
    with desk.store.read() as connection:
        left = connection.execute(sa.select(sa.func.count()).select_from(t.console_sessions))
        assert left.scalar_one() == 0


@pytest.mark.parametrize("column", ["last_seen", "created_at"])
def test_idle_and_absolute_timeouts(desk: Api, browser: TestClient, column: str) -> None:
    sign_in(browser, desk.tokens["viewer"])
    assert browser.get("/console/search").status_code == 200
    # 13 h ago: past the idle timeout (30 min) via last_seen, past the absolute
    # one (12 h) via created_at even with a fresh last_seen.
    with desk.store.database.write() as connection:
        connection.execute(
            sa.update(t.console_sessions).values({column: now() - timedelta(hours=13)})
        )
    gone = browser.get("/console/search", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/console/signin"


def test_sign_out_ends_the_session(desk: Api, browser: TestClient) -> None:
    sign_in(browser, desk.tokens["abuse"])
    cookie = browser.cookies.get("edgectl_console", path="/console")
    page = browser.get("/console/search")
    out = browser.post("/console/signout", data=_form(page.text), follow_redirects=False)
    assert out.status_code == 303 and "signed-out" in out.headers["location"]
    assert browser.get("/console/search", follow_redirects=False).status_code == 303
    trail = desk.get("/v1/audit", params={"object_type": "console_session"})
    assert [(e["action"], e["actor"]) for e in trail] == [
        ("console.signin", "token:test-abuse"),
        ("console.signout", "token:test-abuse"),
    ]
    assert trail[0]["object_id"] == trail[1]["object_id"]
    assert cookie and cookie not in str(trail)
    # The old cookie, replayed, is dead on the server side too.
    with TestClient(desk.client.app, cookies={"edgectl_console": cookie}) as replay:
        assert replay.get("/console/search", follow_redirects=False).status_code == 303


def test_search_refusals_and_history(desk: Api, browser: TestClient) -> None:
    sign_in(browser, desk.tokens["viewer"])
    garbage = browser.get("/console/search", params={"q": "not an address!"})
    assert garbage.status_code == 422 and "q: not an IP address" in garbage.text
    nobody = browser.get("/console/search", params={"q": "100.64.9.9"})
    assert nobody.status_code == 404 and "nobody held 100.64.9.9" in nobody.text
    bad_time = browser.get("/console/search", params={"q": "100.64.1.1", "at": "yesterday"})
    assert bad_time.status_code == 422 and "at:" in bad_time.text
    before = browser.get(
        "/console/search", params={"q": "100.64.1.1", "at": "2020-01-01T00:00:00Z"}
    )
    assert before.status_code == 404
    at_now = browser.get("/console/search", params={"q": "100.64.1.1", "at": now().isoformat()})
    assert at_now.status_code == 200 and "cust-1" in at_now.text
    by_account = browser.get("/console/search", params={"q": "cust-3"}, follow_redirects=False)
    assert by_account.headers["location"] == "/console/accounts/cust-3"
    mac = browser.get("/console/search", params={"q": "00:11:22:aa:bb:cc"}, follow_redirects=False)
    assert mac.headers["location"] == "/console/accounts/00%3A11%3A22%3Aaa%3Abb%3Acc"
    missing = browser.get("/console/accounts/nobody-here")
    assert missing.status_code == 404


def test_quarantine_list_filters_counts_and_pages(desk: Api, browser: TestClient) -> None:
    accounts = [f"bot-{n}" for n in range(60)]
    desk.post(
        "/v1/quarantines/bulk",
        {"accounts": accounts, "mode": "smtp", "reason": "botnet", "ticket": "BOT-1"},
        role="abuse",
    )
    desk.post(
        "/v1/quarantines", {"account": "cust-1", "mode": "block", "reason": "r"}, role="netops"
    )
    sign_in(browser, desk.tokens["viewer"])
    page = browser.get("/console/quarantines")
    assert page.status_code == 200
    assert "(61 match)" in page.text
    assert "smtp (60)" in page.text and "block (1)" in page.text
    assert "token:test-abuse</a> (60)" in page.text
    assert 'id="next-page"' in page.text
    second = browser.get("/console/quarantines", params={"page": 2})
    assert second.text.count("botnet") == 11 and 'id="next-page"' not in second.text
    only_block = browser.get("/console/quarantines", params={"mode": "block"})
    assert "(1 match)" in only_block.text and "cust-1" in only_block.text
    by_actor = browser.get("/console/quarantines", params={"actor": "token:test-netops"})
    assert "(1 match)" in by_actor.text
    bad = browser.get("/console/quarantines", params={"mode": "laser"})
    assert bad.status_code == 422 and "mode: must be one of" in bad.text


def test_gateways_fragment_and_audit_paging(desk: Api, browser: TestClient) -> None:
    sign_in(browser, desk.tokens["viewer"])
    fragment = browser.get("/console/gateways", params={"fragment": 1})
    assert fragment.text.lstrip().startswith('<table id="gateways-table"')
    assert 'data-gateway="gw-a"' in fragment.text and 'data-gateway="gw-b"' in fragment.text
    full = browser.get("/console/gateways")
    assert "<html" in full.text and "console.js" in full.text
    for n in range(60):
        desk.put(f"/v1/accounts/many-{n}/session", {"ipv4": f"100.64.3.{n}"})
    first = browser.get("/console/audit", params={"action": "session.start"})
    assert first.status_code == 200 and 'id="older"' in first.text
    assert "many-59" in first.text  # newest first
    older = re.search(r'href="\?([^"]*before_id=\d+)"', first.text)
    assert older
    second = browser.get("/console/audit?" + older.group(1).replace("&amp;", "&"))
    assert "many-0" in second.text and "many-59" not in second.text
    bad = browser.get("/console/audit", params={"since": "last week"})
    assert bad.status_code == 422 and "since" in bad.text


def test_quarantine_counts_agree_with_the_listing(desk: Api) -> None:
    """Each count is what choosing that value would list (the other filters kept)."""
    from dataclasses import replace

    from edgectl.controller.store import holds

    for n in range(12):
        body = {
            "account": f"c-{n}",
            "mode": ("smtp", "block")[n % 2],
            "reason": "r",
            "ticket": f"T-{n % 3}",
        }
        made = desk.post("/v1/quarantines", body, role=("abuse", "netops")[n % 3 == 0])
        if n % 4 == 0:
            desk.post(
                f"/v1/quarantines/{made['quarantine']['id']}/lift", {"reason": "ok"}, role="abuse"
            )

    def listed(wanted: holds.HoldFilter) -> int:
        return len(holds.listing(desk.store, "quarantine", replace(wanted, limit=1000)))

    for wanted in (
        holds.HoldFilter(),
        holds.HoldFilter(state="all", mode="block"),
        holds.HoldFilter(state="ended", actor="token:test-abuse"),
        holds.HoldFilter(state="lifted", ticket="T-1"),
    ):
        counts = holds.quarantine_counts(desk.store, wanted)
        assert counts["total"] == listed(wanted)
        for state in ("active", "lifted", "expired", "ended", "all"):
            assert counts["state"].get(state, 0) == listed(replace(wanted, state=state)), state
        for mode in ("smtp", "block", "walled-garden"):
            assert counts["mode"].get(mode, 0) == listed(replace(wanted, mode=mode)), mode
        for actor in ("token:test-abuse", "token:test-netops"):
            assert counts["actor"].get(actor, 0) == listed(replace(wanted, actor=actor)), actor
        for ticket in ("T-0", "T-1", "T-2"):
            assert counts["ticket"].get(ticket, 0) == listed(replace(wanted, ticket=ticket))


def test_exemption_with_confirmation_then_lift(desk: Api, browser: TestClient) -> None:
    sign_in(browser, desk.tokens["abuse"])
    page = browser.get("/console/accounts/cust-3")
    assert 'id="exempt-form"' in page.text
    fields = _form(page.text, ticket="EX-9", reason="runs its own MX", duration="2592000")
    confirm = browser.post("/console/accounts/cust-3/exempt", data=fields)
    assert confirm.status_code == 200 and "Confirm exemption" in confirm.text
    assert desk.get("/v1/exemptions", params={"account": "cust-3"}) == []
    no_ticket = browser.post(
        "/console/accounts/cust-3/exempt", data={**fields, "ticket": "", "confirm": "yes"}
    )
    assert no_ticket.status_code == 422 and "ticket" in no_ticket.text
    done = browser.post(
        "/console/accounts/cust-3/exempt", data={**fields, "confirm": "yes"}, follow_redirects=False
    )
    assert done.status_code == 303
    held = desk.get("/v1/exemptions", params={"account": "cust-3"})
    assert [(e["ticket"], e["actor"]) for e in held] == [("EX-9", "token:test-abuse")]
    page = browser.get("/console/accounts/cust-3")
    assert "Exempt from OP25B: ticket EX-9" in page.text
    lifted = browser.post(
        f"/console/exemptions/{held[0]['id']}/lift",
        data=_form(page.text, reason="moved to the relay"),
        follow_redirects=False,
    )
    assert lifted.status_code == 303
    assert desk.get(f"/v1/exemptions/{held[0]['id']}")["state"] == "lifted"


def test_offenders_newest_or_most_events_and_a_content_security_policy(
    desk: Api, browser: TestClient
) -> None:
    def entry(key: str, count: int, last: str) -> dict[str, object]:
        return {
            "key": key,
            "kind": "op25b",
            "policy": "dyn_a",
            "shadow": False,
            "count": count,
            "first_seen": "2026-12-01T00:00:00Z",
            "last_seen": last,
        }

    report = {
        "applied_revision": 0,
        "offenders": {
            "available": True,
            "window_seconds": 300,
            "entries": [
                entry("100.64.1.1", 500, "2026-12-01T00:01:00Z"),
                entry("100.64.1.2", 3, "2026-12-01T00:09:00Z"),
            ],
        },
    }
    agent = {"Authorization": f"Bearer {desk.agent_a}"}  # type: ignore[attr-defined]
    sent = desk.client.post("/v1/gateways/gw-a/status", json=report, headers=agent)
    assert sent.status_code == 200, sent.text
    sign_in(browser, desk.tokens["viewer"])
    newest = browser.get("/console/offenders")
    assert newest.text.index("100.64.1.2") < newest.text.index("100.64.1.1")
    assert "/console/accounts/cust-2" in newest.text  # who holds the key now
    by_events = browser.get("/console/offenders", params={"sort": "events"})
    assert by_events.text.index("100.64.1.1") < by_events.text.index("100.64.1.2")
    policy = newest.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    account = browser.get("/console/accounts/cust-1")
    assert "op25b" in account.text  # the timeline shows the account's offences


def test_intake_reads_console_bodies_only_for_a_session(desk: Api, browser: TestClient) -> None:
    # The sign-in form is read without a credential, but only 4 KiB of it.
    huge = browser.post("/console/signin", data={"csrf": "x", "token": "a" * 5000})
    assert huge.status_code == 413
    # Any other console form: no live session, no body read (401 before the app).
    anonymous = browser.post("/console/accounts/cust-1/quarantine", data={"reason": "r"})
    assert anonymous.status_code == 401
    sign_in(browser, desk.tokens["abuse"])
    page = browser.get("/console/accounts/cust-1")
    signed = browser.post(
        "/console/accounts/cust-1/quarantine", data=_form(page.text, mode="smtp", reason="r")
    )
    assert signed.status_code == 200 and "Confirm quarantine" in signed.text
