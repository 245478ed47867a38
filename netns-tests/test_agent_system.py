"""The whole system: controller and two agents as processes, real HTTP, real TCP.

Every check is a real connection from a subscriber host through a gateway
namespace to the outside MX.  Port 587 is a mail port (quarantine mode
``smtp`` refuses it) but never OP25B, so a refusal there is the quarantine's;
port 25 from a dynamic pool is OP25B's.
"""

from __future__ import annotations

import time

from agent_fixtures import (
    DYN4_A,
    DYN4_B,
    DYN4_C,
    DYN6_A1,
    DYN6_A_KEY,
    DYN6_B,
    MX4,
    System,
    mail,
    outcome_becomes,
    quarantine_offline,
)
from database_fixtures import BOTH_BACKENDS

from edgectl.lab.flows import Stream
from edgectl.lab.probe import Outcome
from edgectl.testing.wait import wait_until

# The controller's database matters here: run on SQLite and on PostgreSQL.
pytestmark = BOTH_BACKENDS

REFUSED = Outcome.RESET  # block_action = reset


def test_quarantine_via_api_is_enforced_on_both_gateways(clean: System) -> None:
    for site in clean.sites.values():
        assert mail(site, DYN4_A) is Outcome.CONNECTED
    clean.session("alice", ipv4=DYN4_A, ipv6=DYN6_A_KEY)
    clean.quarantine("alice")
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_A, REFUSED), site.agent.logs()
        assert outcome_becomes(site, DYN6_A1, REFUSED)
        # Someone else on the same pool is untouched.
        assert mail(site, DYN4_B) is Outcome.CONNECTED
        assert mail(site, DYN6_B) is Outcome.CONNECTED


def test_session_move_moves_the_quarantine(clean: System) -> None:
    clean.session("alice", ipv4=DYN4_A)
    clean.quarantine("alice")
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_A, REFUSED)
        assert mail(site, DYN4_B) is Outcome.CONNECTED
    clean.session("alice", ipv4=DYN4_B)
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_B, REFUSED)
        assert outcome_becomes(site, DYN4_A, Outcome.CONNECTED)


def test_lift_frees_the_subscriber(clean: System) -> None:
    clean.session("alice", ipv4=DYN4_A)
    ident = clean.quarantine("alice")
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_A, REFUSED)
    clean.lift("quarantines", ident)
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_A, Outcome.CONNECTED)


def test_expiry_frees_the_subscriber(clean: System) -> None:
    clean.session("bob", ipv4=DYN4_B)
    clean.quarantine("bob", duration=2)
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_B, REFUSED)
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_B, Outcome.CONNECTED, timeout=10)
    # The kernel's own timeout freed bob; the controller's sweep then ends
    # the hold, and the agents follow that removal too.
    assert wait_until(
        lambda: clean.api("GET", "/v1/quarantines?state=expired&account=bob"), 10, 0.1
    )
    assert clean.converged()
    for site in clean.sites.values():
        assert mail(site, DYN4_B) is Outcome.CONNECTED


def test_exemption_lets_port_25_past_op25b(clean: System) -> None:
    clean.session("carol", ipv4=DYN4_C)
    for site in clean.sites.values():
        assert mail(site, DYN4_C, 25) is REFUSED  # OP25B: dynamic pool, outside MX
        assert mail(site, DYN4_C, 587) is Outcome.CONNECTED  # submission is never OP25B
    exemption = clean.api(
        "POST", "/v1/exemptions", {"account": "carol", "ticket": "T-1", "reason": "own MX"}
    )
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_C, Outcome.CONNECTED, port=25)
        assert mail(site, DYN4_A, 25) is REFUSED  # only carol
    clean.lift("exemptions", exemption["id"])
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_C, REFUSED, port=25)


def test_controller_killed_enforcement_unchanged_then_agents_catch_up(clean: System) -> None:
    clean.session("alice", ipv4=DYN4_A)
    clean.session("bob", ipv4=DYN4_B)
    clean.quarantine("alice")
    assert clean.converged()
    clean.controller.kill()
    for site in clean.sites.values():
        # The agent has noticed the controller is gone ...
        assert site.agent.wait_metric("edgectl_agent_controller_reachable", 0, 30)
        # ... and the kernel still enforces exactly what it did.
        assert mail(site, DYN4_A) is REFUSED
        assert mail(site, DYN4_B) is Outcome.CONNECTED
        assert site.agent.running()
    quarantine_offline(clean.controller, "bob")  # a change made while it was down
    clean.controller.start()
    for site in clean.sites.values():
        assert outcome_becomes(site, DYN4_B, REFUSED, timeout=15), site.agent.logs()[-2000:]
        assert mail(site, DYN4_A) is REFUSED
    assert clean.converged()


def test_status_reports_reach_the_controller(clean: System) -> None:
    clean.session("alice", ipv4=DYN4_A)
    clean.quarantine("alice")
    assert clean.converged()
    site = clean.sites["gw-a"]
    assert outcome_becomes(site, DYN4_A, REFUSED)

    def reported() -> bool:
        gateway = clean.api("GET", "/v1/gateways/gw-a")
        status = gateway["status"]
        return bool(
            gateway["converged"]
            and status["applied_revision"] == gateway["revision"]
            and status["detail"]["counters"]["quarantine_smtp"]["packets"] > 0
        )

    assert wait_until(reported, 10, 0.1)
    gateway = clean.api("GET", "/v1/gateways/gw-a")
    detail = gateway["status"]["detail"]
    assert detail["counters"]["quarantine_smtp"]["policy"] == "quarantine"
    assert "drift_repairs" in detail
    assert detail["last_apply"]["kind"] in ("delta", "full")
    # Offenders are a section of their own; without a log group the agent says why.
    assert "offenders" not in detail
    assert gateway["offenders"]["available"] is False
    assert gateway["offenders"]["reason"].startswith("settings.log_group is not set")


def test_metrics_endpoint(clean: System) -> None:
    clean.session("alice", ipv4=DYN4_A)
    clean.quarantine("alice")
    site = clean.sites["gw-b"]
    assert outcome_becomes(site, DYN4_A, REFUSED)
    assert mail(site, DYN4_B, 25) is REFUSED  # OP25B
    agent = site.agent
    assert agent.applied_revision() == clean.revision("gw-b")
    assert (agent.metric("edgectl_dropped_packets_total", counter="quarantine_smtp") or 0) > 0
    assert (agent.metric("edgectl_dropped_packets_total", counter="op25b_dyn4") or 0) > 0
    assert (agent.metric("edgectl_agent_apply_seconds_count", kind="delta") or 0) > 0
    since = agent.metric("edgectl_agent_seconds_since_last_sync")
    assert since is not None and 0 <= since < 3600


def test_block_via_api_cuts_the_open_flows_the_key_had(clean: System) -> None:
    """The agent's path (a delta applied by the daemon) cuts flows like ``edgectl apply``."""
    site = clean.sites["gw-a"]
    hosts = site.topology.hosts

    def stream(src: str, port: int) -> Stream:
        return Stream("udp", hosts["dyn4"].ns, src, hosts["mx"].ns, MX4, port)

    clean.session("alice", ipv4=DYN4_A)
    with stream(DYN4_A, 5001) as held, stream(DYN4_B, 5002) as other:
        assert wait_until(lambda: held.snapshot()[0] > 0 and other.snapshot()[0] > 0, 5.0)
        clean.quarantine("alice", mode="block")
        assert clean.converged()
        # The agent reports the revision only after its commit and the cut.
        converged = time.monotonic()
        assert wait_until(lambda: (other.snapshot()[1] or 0.0) > converged + 0.3, 10.0)
        last = held.snapshot()[1]
        assert last is not None and last < converged, "a blocked key's UDP stream goes on"
