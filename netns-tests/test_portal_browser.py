"""The notice page in a real browser: Debian's /usr/bin/chromium, driven by
Playwright, against the lab (controller, agents and notice portals in
network namespaces).

The browser runs inside gw-a's dyn4 subscriber namespace (a wrapper script
execs it under ``ip netns exec``), so its requests come from cust-1001's
100.64.0.10, the namespace's first address, and cross the gateway like a
subscriber's.  cust-1001 is put in the walled garden; a page on an outside
host shows the notice in Japanese and in English (by the browser's
language); acknowledged without releasing, the next page is a short
reminder linking to the whole notice; the form's code and check box release
the hold, and the gateways converge on the lift.  Screenshots go to
``netns-tests/artifacts/portal/``.  Playwright never downloads a browser:
it launches Debian's by path.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import browser_support
import playwright.sync_api as playwright_api  # a test dependency: missing fails, never skips
import pytest
from browser_support import ARGS, STEP_MS, chromium_in, lab_for_browser

from edgectl.lab import fleet
from edgectl.lab.lab_cli import GARDENED, MX4
from edgectl.testing.wait import wait_until

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "portal"
CONVERGE_S = 30.0


@pytest.fixture(scope="module")
def lab(leftovers_removed: list[str]) -> Iterator[fleet.Up]:
    with lab_for_browser("portal") as up:
        yield up


def converged(lab: fleet.Up) -> bool:
    gateways = fleet.api(lab.state, "GET", "/v1/gateways")
    return all(
        g["converged"] and (g.get("status") or {}).get("applied_revision") == g["revision"]
        for g in gateways
    )


@pytest.fixture
def browser(lab: fleet.Up, tmp_path: Path) -> Iterator[Any]:
    ns = lab.state.host_ns(fleet.GATEWAYS[0], "dyn4")
    wrapper = chromium_in(ns, tmp_path)
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(wrapper), args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def shot(page: Any, name: str) -> None:
    browser_support.shot(page, ARTIFACTS, name)


def test_the_notice_in_both_languages_and_the_self_release(lab: fleet.Up, browser: Any) -> None:
    hold = {
        "account": GARDENED,
        "mode": "walled-garden",
        "reason": "analyst's note: C2 beacon",
        "category": "botnet",
        "ticket": "ABUSE-78",
    }
    created = fleet.api(lab.state, "POST", "/v1/quarantines", hold)["quarantine"]
    assert wait_until(lambda: converged(lab), timeout=CONVERGE_S, interval=0.2)
    pages = {}
    for language, locale in (("ja", "ja-JP"), ("en", "en-US")):
        context = browser.new_context(locale=locale, viewport={"width": 1024, "height": 900})
        context.set_default_timeout(STEP_MS)
        page = context.new_page()
        page.goto(f"http://{MX4}/news/today")
        assert page.locator("html").get_attribute("lang") == language
        assert page.locator(".account").inner_text() == GARDENED
        assert page.locator(".ticket").inner_text() == "ABUSE-78"
        assert ("ボットネット" if language == "ja" else "botnet") in page.inner_text(".category")
        assert "C2 beacon" not in page.content()
        shot(page, f"notice-{language}")
        pages[language] = page
    # Acknowledged (in Japanese, without releasing): the next page is the
    # short reminder, which links to the whole notice.
    page = pages["ja"]
    page.get_by_label("上のコードを入力してください").fill(page.inner_text(".code"))
    page.get_by_role("button", name="お知らせを確認しました").click()
    page.wait_for_selector(".acknowledged")
    page.goto(f"http://{MX4}/weather")
    page.wait_for_selector(".reminder")
    assert page.locator(".ticket").inner_text() == "ABUSE-78"
    assert page.locator(".code").count() == 0
    shot(page, "reminder-ja")
    page.get_by_role("link", name="お知らせ全文をもう一度読む").click()
    page.wait_for_selector(".code")
    page = pages["en"]
    page.get_by_label("Type it to confirm").fill(page.inner_text(".code"))
    page.get_by_label("I have cleaned my devices").check()
    page.get_by_role("button", name="I have read this notice").click()
    page.wait_for_selector(".released")
    shot(page, "released-en")
    lifted = fleet.api(lab.state, "GET", f"/v1/quarantines/{created['id']}")
    assert (lifted["state"], lifted["ended_by"]) == ("lifted", f"subscriber:{GARDENED}")
    assert wait_until(lambda: converged(lab), timeout=CONVERGE_S, interval=0.2)
