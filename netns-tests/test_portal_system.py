"""The notice portal end to end, over real TCP (issue 13).

A controller process, an agent for the lab gateway, and ``edgectl portal
run`` as its own process with a portal-role token: its listener sits in the
lab's portal host namespace (``listen_netns``), where the gateway DNATs
walled-garden HTTP to, and it reaches the controller on 127.0.0.1.

A walled-garden subscriber's plain HTTP to an outside host gets the notice
(account, category text, ticket); HTTPS is refused; the allowlisted update
host answers as itself; an unquarantined neighbour reaches the real server;
acknowledgement with the code releases the subscriber on the gateway within
1 s; after an acknowledgement without release, pages are a short reminder
with a link to the whole notice; a POST without the code is refused; the
fourth self-release in 30 days is refused; the portal token cannot create
or lift holds.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import AgentProc, Controller
from gateway_fixtures import (
    DYN4_A,
    DYN4_B,
    DYN4_C,
    MX4,
    MX4_SECOND,
    PORTAL4,
    PORTAL6,
    RESOLVER4,
    RESOLVER6,
    tcp,
)

from edgectl.controller.auth import Role
from edgectl.controller.store import Store, tokens
from edgectl.lab.probe import Listener, Outcome
from edgectl.lab.topology import Topology
from edgectl.lab.web import Reply, http_request, text_server
from edgectl.testing.processes import EDGECTL, stop
from edgectl.testing.rest import HttpError, Rest
from edgectl.testing.wait import wait_until

GATEWAY = "lab-gw"
PORTAL_PORT = 8080
RELEASE_BUDGET = 1.0  # seconds from the acknowledging POST to the gateway letting HTTP out


@dataclass
class Stack:
    topology: Topology
    controller: Controller
    agent: AgentProc
    portal_token: str

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.controller.call(method, path, body)

    def converged(self) -> bool:
        revision = self.api("GET", f"/v1/gateways/{GATEWAY}")["revision"]
        return wait_until(lambda: self.agent.applied_revision() == revision, 10.0, 0.02)

    def get(self, src: str, dst: str = MX4, **kwargs: Any) -> Reply | Outcome:
        ns = self.topology.hosts["dyn4"].ns
        return http_request(ns, dst, 80, src=src, **kwargs)

    def hold(self, account: str, category: str, **extra: Any) -> int:
        body = {
            "account": account,
            "mode": "walled-garden",
            "reason": "analyst's private note: sinkhole hit",
            "category": category,
            "ticket": f"ABUSE-{category}",
            **extra,
        }
        ident: int = self.api("POST", "/v1/quarantines", body)["quarantine"]["id"]
        assert self.converged(), self.agent.logs()
        return ident


def _portal_config(workdir: Path, controller: Controller, token: str, ns: str) -> Path:
    token_file = workdir / "portal.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    config = workdir / "portal.toml"
    config.write_text(
        "[portal]\n"
        f'controller_url = "{controller.url}"\n'
        f'token_file = "{token_file}"\n'
        f'listen = "{PORTAL4}:{PORTAL_PORT}"\n'
        f'listen_netns = "{ns}"\n'
        f'public_url = "http://{PORTAL4}:{PORTAL_PORT}/"\n'
        'default_language = "en"\n'
        'support = "0120-000-000"\n'
    )
    return config


@pytest.fixture(scope="module", name="stack")
def stack_fixture(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("portal-system")
    controller = Controller(workdir)
    store = Store.open(f"sqlite:///{controller.db}", migrate=False)
    try:
        portal_token = tokens.create(store, "portal", Role.PORTAL)
    finally:
        store.close()
    hosts = topology.hosts
    with contextlib.ExitStack() as stack:
        controller.start()
        stack.callback(controller.stop)
        call = controller.call
        call(
            "POST", "/v1/pools", {"name": "dyn4", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]}
        )
        infra = ["198.51.100.0/24", "2001:db8:eeee::/48"]
        call("POST", "/v1/pools", {"name": "infra", "kind": "infrastructure", "prefixes": infra})
        settings = {
            "resolvers": [RESOLVER4, RESOLVER6],
            "portal": [PORTAL4, PORTAL6],
            "steer_http_4": PORTAL4,
            "steer_http_port": PORTAL_PORT,
            "garden_allow": [{"prefix": f"{MX4_SECOND}/32", "ports": [80]}],
        }
        made = call(
            "POST",
            "/v1/gateways",
            {"name": GATEWAY, "pools": ["dyn4", "infra"], "settings": settings},
        )
        agent = AgentProc(workdir, GATEWAY, topology.gateway_ns, controller.url)
        agent.set_token(made["agent_token"])
        agent.start()
        stack.callback(agent.terminate)
        config = _portal_config(workdir, controller, portal_token, hosts["portal"].ns)
        log = (workdir / "portal.log").open("ab")
        stack.callback(log.close)
        portal = subprocess.Popen(
            [EDGECTL, "portal", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(stop, portal)
        mx = hosts["mx"].ns
        stack.enter_context(text_server(mx, MX4, 80, "real server"))
        stack.enter_context(text_server(mx, MX4_SECOND, 80, "update service"))
        https = Listener(mx, [MX4], (443,))
        stack.callback(https.close)
        for account, address in (("alice", DYN4_A), ("bob", DYN4_B), ("carol", DYN4_C)):
            call("PUT", f"/v1/accounts/{account}/session", {"ipv4": address})
        built = Stack(topology, controller, agent, portal_token)
        assert built.converged(), agent.logs()

        def portal_up() -> bool:
            reply = http_request(hosts["portal"].ns, PORTAL4, PORTAL_PORT, path="/.edgectl/healthz")
            return isinstance(reply, Reply) and reply.status == 200

        assert wait_until(portal_up, 15.0, 0.05), (workdir / "portal.log").read_text()
        yield built


def body_of(reply: Reply | Outcome) -> str:
    assert isinstance(reply, Reply), reply
    return reply.body


def code_in(html: str) -> str:
    found = re.search(r'class="code">([A-Z0-9]+)<', html)
    assert found, html
    return found.group(1)


def acknowledge(stack: Stack, src: str, hold: int, code: str | None, release: bool = True) -> Reply:
    form = f"hold={hold}" + ("&release=1" if release else "")
    form += "" if code is None else f"&code={code}"
    reply = stack.get(
        src,
        path="/.edgectl/acknowledge",
        method="POST",
        host="example.org",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=form.encode(),
    )
    assert isinstance(reply, Reply), reply
    return reply


def test_notice_steering_and_self_release(stack: Stack) -> None:
    topology = stack.topology
    assert body_of(stack.get(DYN4_A)) == "real server"
    hold = stack.hold("alice", "botnet")
    notice = body_of(stack.get(DYN4_A, host="www.example.org"))
    assert "alice" in notice and "ABUSE-botnet" in notice and "botnet" in notice
    assert "www.example.org" in notice and "sinkhole" not in notice
    japanese = body_of(stack.get(DYN4_A, headers={"Accept-Language": "ja"}))
    assert 'lang="ja"' in japanese and "ボットネット" in japanese
    # HTTPS refused, the update host reached as itself, the neighbour untouched.
    assert tcp(topology, DYN4_A, MX4, 443, expect_drop=True) is Outcome.TIMEOUT
    assert body_of(stack.get(DYN4_A, MX4_SECOND)) == "update service"
    assert body_of(stack.get(DYN4_B)) == "real server"
    assert tcp(topology, DYN4_B, MX4, 443) is Outcome.CONNECTED
    # A blind POST (no code) is refused; the subscriber stays in the garden.
    blind = acknowledge(stack, DYN4_A, hold, None)
    assert blind.status == 400
    assert stack.api("GET", f"/v1/quarantines/{hold}")["state"] == "active"
    code = code_in(notice)
    started = time.monotonic()
    done = acknowledge(stack, DYN4_A, hold, code)
    assert done.status == 200 and 'class="released"' in done.body, done.body

    def released() -> bool:
        reply = stack.get(DYN4_A, timeout=0.3)
        return isinstance(reply, Reply) and reply.body == "real server"

    assert wait_until(released, RELEASE_BUDGET, 0.02), "still steered 1 s after the release"
    elapsed = time.monotonic() - started
    print(f"released on the gateway {elapsed * 1000:.0f} ms after the acknowledging POST")
    lifted = stack.api("GET", f"/v1/quarantines/{hold}")
    assert (lifted["state"], lifted["ended_by"]) == ("lifted", "subscriber:alice")
    kinds = [n["kind"] for n in stack.api("GET", "/v1/accounts/alice/history")["notices"]]
    assert kinds[:2] == ["released", "acknowledged"] and "shown" in kinds


def test_after_acknowledging_pages_are_a_short_reminder(stack: Stack) -> None:
    """RFC 6108: acknowledgement stops further immediate notices.  The gateway
    keeps steering (dropping the key from steering would turn every page into
    a timeout: the garden still refuses everything else), and the portal
    answers a reminder with a link to the whole notice."""
    hold = stack.hold("alice", "malware")
    notice = body_of(stack.get(DYN4_A, host="news.example"))
    reply = acknowledge(stack, DYN4_A, hold, code_in(notice), release=False)
    assert reply.status == 200 and 'class="acknowledged"' in reply.body, reply.body
    for host in ("news.example", "www.example.org"):
        page = body_of(stack.get(DYN4_A, host=host))
        assert 'class="reminder"' in page and host in page and "ABUSE-malware" in page, page
        assert 'class="code"' not in page and "<form" not in page
    assert tcp(stack.topology, DYN4_A, MX4, 443, expect_drop=True) is Outcome.TIMEOUT
    assert body_of(stack.get(DYN4_A, MX4_SECOND)) == "update service"
    # The link: the whole notice again, with a code that releases.
    full = body_of(stack.get(DYN4_A, path="/.edgectl/notice", host="news.example"))
    assert 'class="reminder"' not in full
    done = acknowledge(stack, DYN4_A, hold, code_in(full))
    assert done.status == 200 and 'class="released"' in done.body, done.body
    assert stack.converged()
    assert body_of(stack.get(DYN4_A)) == "real server"
    kinds = [n["kind"] for n in stack.api("GET", "/v1/accounts/alice/history")["notices"]]
    assert kinds[:6] == [
        "released",
        "acknowledged",
        "shown",
        "reminded",
        "reminded",
        "acknowledged",
    ]


def test_a_hold_on_an_address_shows_its_notice_and_is_left_to_support(stack: Stack) -> None:
    """A hold placed on an address, not an account: steered like any other,
    the portal shows its notice (no account to name) and offers no release."""
    body = {"prefix": DYN4_B, "mode": "walled-garden", "reason": "x", "ticket": "ABUSE-static"}
    hold = stack.api("POST", "/v1/quarantines", body)["quarantine"]["id"]
    assert stack.converged(), stack.agent.logs()
    notice = body_of(stack.get(DYN4_B, host="www.example.org"))
    assert "ABUSE-static" in notice and "www.example.org" in notice, notice
    assert 'name="release"' not in notice and "support team" in notice
    refused = acknowledge(stack, DYN4_B, hold, code_in(notice))
    assert refused.status == 409 and "support team" in refused.body, refused.body
    stack.api("POST", f"/v1/quarantines/{hold}/lift", {"reason": "line cleaned"})
    assert stack.converged()
    assert body_of(stack.get(DYN4_B)) == "real server"


def test_the_fourth_self_release_in_30_days_is_refused(stack: Stack) -> None:
    for round_ in range(4):
        # A new category each time: the grace period is not what this is about.
        hold = stack.hold("carol", f"cat_{round_}")
        notice = body_of(stack.get(DYN4_C))
        reply = acknowledge(stack, DYN4_C, hold, code_in(notice))
        if round_ < 3:
            assert reply.status == 200 and 'class="released"' in reply.body, reply.body
            assert stack.converged()
    assert reply.status == 409 and 'class="refused"' in reply.body, reply.body
    assert "too often" in reply.body
    assert stack.api("GET", f"/v1/quarantines/{hold}")["state"] == "active"
    assert "alice" not in body_of(stack.get(DYN4_C))  # still the notice, and carol's
    assert "carol" in body_of(stack.get(DYN4_C))


def test_the_portal_token_cannot_create_or_lift_holds(stack: Stack) -> None:
    hold = stack.hold("bob", "spam")
    portal = Rest(stack.controller.url, stack.portal_token, timeout=5)
    attempts = [
        ("/v1/quarantines", {"account": "alice", "mode": "block", "reason": "x"}),
        (f"/v1/quarantines/{hold}/lift", {"reason": "x"}),
        ("/v1/exemptions", {"account": "alice", "ticket": "T", "reason": "x"}),
    ]
    for path, body in attempts:
        with pytest.raises(HttpError) as refused:
            portal.call("POST", path, body)
        assert refused.value.status == 403, path
    assert stack.api("GET", f"/v1/quarantines/{hold}")["state"] == "active"
    assert "bob" in body_of(stack.get(DYN4_B))  # still held, still steered
    # The agent's read-back took the nat chain and the allowlist as its own
    # all along: no drift repaired (a misread would repair on every check).
    assert stack.agent.metric("edgectl_agent_drift_repairs_total") == 0
    stack.api("POST", f"/v1/quarantines/{hold}/lift", {"reason": "staff lift"})
