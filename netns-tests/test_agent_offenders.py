"""Offenders end to end: real connects over a rate limit, the agent's report, the controller's view.

A subscriber opens more mail connections through a gateway than its
profile's burst allows; the gateway's block rules log the refusals to the
nflog group of ``settings.log_group``; the agent on that gateway hears them,
keys them by subscriber and reports them; the controller shows them on
``GET /v1/gateways/{name}`` (a summary) and ``GET /v1/offenders`` (the
entries of every gateway, with the account that holds each key).
"""

from __future__ import annotations

from typing import Any

from agent_fixtures import (
    DYN4_A,
    DYN4_B,
    DYN4_C,
    DYN6_A1,
    DYN6_A_KEY,
    System,
    mail,
)

from edgectl.agent.daemon.offender_listener import NO_LOG_GROUP
from edgectl.lab.probe import Outcome
from edgectl.model import Prefix
from edgectl.testing.rest import HttpError
from edgectl.testing.wait import wait_until

BURST = 3
REPORTED = 15.0  # kernel batch (1 s) + report interval (2 s) + convergence, with room


def rate_limited(system: System) -> None:
    """A profile that never refills (what passes is the burst) on both dynamic pools.

    Whichever test runs first creates it; a later one finds it and puts the
    same values again, so each test sets up what it needs in any order.
    """
    profile = {"new_per_minute": 1, "burst": BURST}
    try:
        system.api("PUT", "/v1/rate-limits/residential", profile)
    except HttpError as error:
        if error.status != 404:
            raise
        system.api("POST", "/v1/rate-limits", {"name": "residential", **profile})
    for name in ("dyn4", "dyn6"):
        pool = system.api("GET", f"/v1/pools/{name}")
        body = {k: pool[k] for k in ("kind", "prefixes", "subscriber_prefix_len", "op25b_shadow")}
        system.api("PUT", f"/v1/pools/{name}", {**body, "rate_limit": "residential"})


def offenders(system: System) -> dict[tuple[Prefix, str, str], dict[str, Any]]:
    """GET /v1/offenders by (key, kind, policy); keys compared as prefixes, whatever the
    spelling (the agent reports ``100.64.0.10/32``, the controller may list ``100.64.0.10``)."""
    listed = system.api("GET", "/v1/offenders?limit=1000")
    return {(Prefix.parse(e["key"]), e["kind"], e["policy"]): e for e in listed}


def test_a_subscriber_over_its_rate_limit_is_reported_as_an_offender(clean: System) -> None:
    rate_limited(clean)
    clean.set_settings("gw-a", log_group=7)
    clean.set_settings("gw-b")  # no log group (another test may have set one)
    clean.session("alice", ipv4=DYN4_A, ipv6=DYN6_A_KEY)
    assert clean.converged()
    gw_a = clean.sites["gw-a"]
    assert [mail(gw_a, DYN4_A) for _ in range(BURST + 3)] == [Outcome.CONNECTED] * BURST + [
        Outcome.RESET
    ] * 3
    assert [mail(gw_a, DYN6_A1) for _ in range(BURST + 2)] == [Outcome.CONNECTED] * BURST + [
        Outcome.RESET
    ] * 2
    assert mail(gw_a, DYN4_B) is Outcome.CONNECTED  # under its limit: never named

    v4 = (Prefix.parse(f"{DYN4_A}/32"), "ratelimit", "residential")
    v6 = (Prefix.parse(DYN6_A_KEY), "ratelimit", "residential")

    def listed() -> bool:
        found = offenders(clean)
        return found.get(v4, {}).get("count") == 3 and found.get(v6, {}).get("count") == 2

    assert wait_until(listed, REPORTED, 0.2), (offenders(clean), gw_a.agent.logs()[-3000:])
    found = offenders(clean)
    assert found[v4]["gateways"] == ["gw-a"] and found[v4]["shadow"] is False
    assert found[v4]["account"] == "alice" and found[v6]["account"] == "alice"
    assert Prefix.parse(DYN4_B) not in {key for key, _, _ in found}

    gateway = clean.api("GET", "/v1/gateways/gw-a")
    assert gateway["converged"] and gateway["status"]["applied_revision"] == gateway["revision"]
    assert "offenders" not in gateway["status"]["detail"]
    summary = gateway["offenders"]
    assert (summary["available"], summary["reason"]) == (True, None)
    # alice's two, and whatever an earlier test left in gw-a's window: one count throughout.
    from_a = clean.api("GET", "/v1/offenders?gateway=gw-a&limit=1000")
    assert {(Prefix.parse(e["key"]), e["kind"], e["policy"]) for e in from_a} >= {v4, v6}
    assert summary["window_seconds"] == 900 and summary["count"] == len(from_a)
    assert gw_a.agent.metric("edgectl_agent_offenders") == len(from_a)
    assert gw_a.agent.metric("edgectl_agent_nflog_overruns_total") == 0

    # gw-b logs to the kernel log: its agent says so instead of listing nothing.
    def says_why() -> bool:
        other = clean.api("GET", "/v1/gateways/gw-b")["offenders"]
        return other is not None and other["reason"] == NO_LOG_GROUP

    assert wait_until(says_why, REPORTED, 0.2)
    assert clean.api("GET", "/v1/gateways/gw-b")["offenders"]["available"] is False


def test_a_log_group_set_later_is_bound_and_the_gateways_add_up(clean: System) -> None:
    rate_limited(clean)
    clean.set_settings("gw-a", log_group=7)
    clean.set_settings("gw-b", log_group=9)  # a new revision: gw-b's agent binds group 9
    clean.session("carol", ipv4=DYN4_C)
    assert clean.converged()

    def available() -> bool:
        for name in ("gw-a", "gw-b"):
            summary = clean.api("GET", f"/v1/gateways/{name}")["offenders"]
            if summary is None or summary["available"] is not True:
                return False
        return True

    assert wait_until(available, REPORTED, 0.2), clean.sites["gw-b"].agent.logs()[-3000:]
    for site in clean.sites.values():
        outcomes = [mail(site, DYN4_C) for _ in range(BURST + 1)]
        assert outcomes == [Outcome.CONNECTED] * BURST + [Outcome.RESET]
    key = (Prefix.parse(DYN4_C), "ratelimit", "residential")

    def both() -> bool:
        return offenders(clean).get(key, {}).get("gateways") == ["gw-a", "gw-b"]

    assert wait_until(both, REPORTED, 0.2), offenders(clean)
    entry = offenders(clean)[key]
    assert (entry["count"], entry["account"], entry["shadow"]) == (2, "carol", False)
