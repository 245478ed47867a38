"""The web console in a real browser: Debian's /usr/bin/chromium, driven by
Playwright, against the lab (a real controller and two real agents in
network namespaces).

An abuse analyst signs in, searches an address, quarantines its account
(with the confirmation step), sees both gateways converge on the page that
refreshes itself, checks the kernel refuses the subscriber's mail, lifts the
quarantine; a POST without the CSRF token is refused; sign-out works; a
viewer sees no controls and a forged POST from the viewer's session is 403.

The browser runs inside the lab's controller namespace (a wrapper script
execs it under ``ip netns exec``), so nothing is added to the root
namespace.  Each view's screenshot goes to ``netns-tests/artifacts/console/``.
Playwright never downloads a browser here: it launches Debian's by path.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import browser_support
import pytest
from browser_support import ARGS, STEP_MS, chromium_in, lab_for_browser

from edgectl.lab import fleet, lab_cli
from edgectl.lab.lab_cli import MX4, QUARANTINED
from edgectl.lab.probe import Outcome, connect
from edgectl.testing.fleet import create_token
from edgectl.testing.wait import wait_until

try:
    import playwright.sync_api as playwright_api
except ImportError:  # setup.sh installs it: missing is a broken set-up, never a skip
    pytest.fail("playwright is not installed: run scripts/setup.sh", pytrace=False)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
CONSOLE = f"{fleet.CONTROLLER_LOCAL_URL}/console"
ADDRESS = "100.64.0.11"  # QUARANTINED's IPv4 in the lab
CONVERGE_S = 30.0


@pytest.fixture(scope="module")
def lab(leftovers_removed: list[str]) -> Iterator[fleet.Up]:
    with lab_for_browser("console") as up:
        yield up


@pytest.fixture(scope="module")
def viewer_token(lab: fleet.Up) -> str:
    return create_token(
        f"sqlite:///{lab.state.directory / 'controller.db'}", "lab-viewer", "viewer"
    )


@pytest.fixture
def browser(lab: fleet.Up, tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile, the browser process inside the controller namespace."""
    wrapper = chromium_in(lab.state.ctl_ns, tmp_path)
    profile = tmp_path / "profile"
    with playwright_api.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(wrapper),
            args=ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(STEP_MS)
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


def shot(page: Any, name: str) -> None:
    browser_support.shot(page, ARTIFACTS, name)


def sign_in(page: Any, token: str) -> None:
    page.goto(CONSOLE)
    assert page.url.endswith("/console/signin")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/search")


def probe(lab: fleet.Up, gateway: str) -> Outcome:
    ns = fleet.resolve_namespace(lab.state.name, f"{gateway}/dyn4")
    return connect(ns, MX4, 587, src=ADDRESS, timeout=2.0)


def form_post(page: Any, path: str, body: str) -> int:
    """A POST from inside the page (same origin, the session cookie goes with it)."""
    status: int = page.evaluate(
        """([path, body]) => fetch(path, {method: "POST", body: body,
             headers: {"Content-Type": "application/x-www-form-urlencoded"}})
             .then(r => r.status)""",
        [path, body],
    )
    return status


def converged_to(page: Any, wanted: dict[str, int]) -> bool:
    for gateway, revision in wanted.items():
        row = page.locator(f'#gateways-table tr[data-gateway="{gateway}"]')
        if row.get_attribute("data-converged") != "yes":
            return False
        if int(row.locator("td").nth(2).inner_text()) < revision:
            return False
    return True


def wanted_revisions(lab: fleet.Up) -> dict[str, int]:
    return {g["name"]: g["revision"] for g in fleet.api(lab.state, "GET", "/v1/gateways")}


def test_lab_up_prints_the_console_and_its_sign_in_token(lab: fleet.Up) -> None:
    printed = "\n".join(lab_cli.instructions(lab, "edgectl lab", ""))
    assert f"{CONSOLE} inside namespace {lab.state.ctl_ns}; sign in with {lab.abuse_token}" in (
        printed
    )
    assert lab.state.abuse_token_file.read_text().strip() == lab.abuse_token


def test_analyst_quarantines_sees_convergence_and_lifts(lab: fleet.Up, browser: Any) -> None:
    page = browser.new_page()
    page.goto(CONSOLE)
    shot(page, "01-signin")
    assert lab.abuse_token not in page.content()
    sign_in(page, lab.abuse_token)
    assert lab.abuse_token not in page.content()

    page.get_by_label("IP address, prefix or account").fill(ADDRESS)
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("#holders")
    shot(page, "02-search")
    page.get_by_role("link", name=QUARANTINED).click()
    page.wait_for_url(f"**/console/accounts/{QUARANTINED}")
    assert "Not quarantined." in page.inner_text("#active-quarantine")
    shot(page, "03-account")
    assert probe(lab, "gw-a") is Outcome.CONNECTED

    page.select_option("#q-mode", "smtp")
    page.get_by_label("Reason").first.fill("spam run seen by the MX operators")
    page.locator("#q-ticket").fill("ABUSE-77")
    page.get_by_role("button", name="Review quarantine…").click()
    page.wait_for_selector("#confirm-summary")
    shot(page, "04-confirm")
    page.get_by_role("button", name="Confirm quarantine").click()
    page.wait_for_url(f"**/console/accounts/{QUARANTINED}?notice=quarantined")
    assert "smtp" in page.inner_text("#active-quarantine")

    # The page's own refresh (console.js) shows both gateways applying it.
    wanted = wanted_revisions(lab)
    assert wait_until(lambda: converged_to(page, wanted), timeout=CONVERGE_S, interval=0.25), wanted
    shot(page, "05-account-converged")
    for gateway in fleet.GATEWAYS:
        assert wait_until(
            lambda g=gateway: probe(lab, g) is Outcome.RESET, timeout=CONVERGE_S, interval=0.25
        )

    # Refresh without a reload: a change made elsewhere (the REST API) shows up
    # on an open gateways page, whose window keeps a mark a reload would drop.
    page.goto(f"{CONSOLE}/gateways")
    page.evaluate("window.consoleMark = 'not reloaded'")
    other = fleet.api(
        lab.state,
        "POST",
        "/v1/quarantines",
        {"account": "cust-1001", "mode": "block", "reason": "refresh check"},
    )
    wanted = wanted_revisions(lab)
    assert wait_until(lambda: converged_to(page, wanted), timeout=CONVERGE_S, interval=0.25), wanted
    assert page.evaluate("window.consoleMark") == "not reloaded"
    fleet.api(
        lab.state,
        "POST",
        f"/v1/quarantines/{other['quarantine']['id']}/lift",
        {"reason": "refresh checked"},
    )

    for view in ("gateways", "quarantines", "offenders", "audit"):
        page.goto(f"{CONSOLE}/{view}")
        shot(page, f"06-{view}")
    assert "spam run seen by the MX operators" in page.inner_text("#audit")

    # A POST without the CSRF token, from the signed-in page itself: refused.
    status = form_post(
        page, f"/console/accounts/{QUARANTINED}/quarantine", "mode=block&reason=forged&confirm=yes"
    )
    assert status == 403

    page.goto(f"{CONSOLE}/accounts/{QUARANTINED}")
    page.get_by_label("Lift reason").fill("customer cleaned the machine")
    page.get_by_role("button", name="Lift quarantine").click()
    page.wait_for_url(f"**/console/accounts/{QUARANTINED}?notice=lifted")
    assert "Not quarantined." in page.inner_text("#active-quarantine")
    shot(page, "07-lifted")
    for gateway in fleet.GATEWAYS:
        assert wait_until(
            lambda g=gateway: probe(lab, g) is Outcome.CONNECTED, timeout=CONVERGE_S, interval=0.25
        )
    held = fleet.api(lab.state, "GET", f"/v1/quarantines?account={QUARANTINED}&state=all")
    assert next((q["actor"], q["state"], q["mode"]) for q in held) == (
        "token:lab-abuse",
        "lifted",
        "smtp",
    )

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/signin?notice=signed-out")
    shot(page, "08-signed-out")
    page.goto(f"{CONSOLE}/search")
    assert page.url.endswith("/console/signin")


def test_viewer_sees_no_controls_and_forged_post_is_403(
    lab: fleet.Up, viewer_token: str, browser: Any
) -> None:
    page = browser.new_page()
    sign_in(page, viewer_token)
    page.goto(f"{CONSOLE}/accounts/{QUARANTINED}")
    assert page.locator("#quarantine-form").count() == 0
    assert page.locator("#exempt-form").count() == 0
    assert page.get_by_role("button", name="Review quarantine…").count() == 0
    shot(page, "09-viewer-account")
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    assert csrf
    status = form_post(
        page,
        f"/console/accounts/{QUARANTINED}/quarantine",
        f"csrf={csrf}&mode=block&reason=forged&confirm=yes",
    )
    assert status == 403
    active = fleet.api(lab.state, "GET", f"/v1/quarantines?account={QUARANTINED}")
    assert active == []


def test_pages_work_with_javascript_off(lab: fleet.Up, tmp_path: Path) -> None:
    wrapper = chromium_in(lab.state.ctl_ns, tmp_path)
    with playwright_api.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(wrapper),
            args=ARGS,
            headless=True,
            java_script_enabled=False,
        )
        context.set_default_timeout(STEP_MS)
        try:
            page = context.new_page()
            sign_in(page, lab.abuse_token)
            page.get_by_label("IP address, prefix or account").fill(ADDRESS)
            page.keyboard.press("Enter")  # keyboard-reachable: no mouse needed
            page.wait_for_selector("#holders")
            page.goto(f"{CONSOLE}/gateways")
            assert page.locator('#gateways-table tr[data-gateway="gw-b"]').count() == 1
            shot(page, "10-no-javascript-gateways")
        finally:
            context.close()
