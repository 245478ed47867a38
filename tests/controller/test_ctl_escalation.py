"""The escalation engine pass by pass: strikes from reports and offenders climb
the ladder; modes, brakes, exemptions, absorbed hits, proposals, replay, and
the leader lock; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from ctl_support import Api, World, settings_for
from fastapi.testclient import TestClient

from edgectl.controller.app import create_app
from edgectl.controller.escalation import engine
from edgectl.controller.store import Store, audit, episodes, gateways, offenders, policies
from edgectl.controller.store import schema as t
from edgectl.controller.store.core import now
from edgectl.controller.store.feed import AccountingEvent, apply_events
from edgectl.model import Prefix
from edgectl.testing.wait import wait_until

LADDER = {
    "strikes": [{"source": "report", "class": "spam"}],
    "steps": [
        {"strike": 1, "mode": "walled-garden", "duration": 86_400},
        {"strike": 2, "mode": "smtp", "duration": 7 * 86_400},
        {"strike": 3, "mode": "block", "review": True},
    ],
    "window": 30 * 86_400,
}


def _policy(api: Api, mode: str = "enforce", ladder: dict[str, Any] | None = None) -> None:
    api.put("/v1/policies/spam-ladder", {"mode": mode, **(ladder or LADDER)}, expect=None)


def _bind(api: Api, account: str, address: str) -> None:
    """A RADIUS session from a week ago, so that reports of the last days are its."""
    start = AccountingEvent(
        "nas1",
        "start",
        now() - timedelta(days=7),
        f"s-{account}",
        account,
        Prefix.parse(address),
        None,
        None,
    )
    apply_events(api.store, [start])


def _report(api: Api, address: str, ident: str, cls: str = "spam", ago: float = 60) -> None:
    when = (now() - timedelta(seconds=ago)).isoformat()
    body = f"address,time,class,message_id\n{address},{when},{cls},{ident}\n"
    response = api.call(
        "POST", "/v1/reports", role="abuse", content=body, headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text


def _pass(api: Api, **overrides: Any) -> engine.PassResult:
    return engine.run_once(api.store, settings_for(api.store, **overrides))


def _holds(api: Api, account: str) -> list[dict[str, Any]]:
    return api.get(f"/v1/quarantines?account={account}", role="viewer")  # type: ignore[no-any-return]


def _lift(api: Api, account: str) -> None:
    [hold] = _holds(api, account)
    api.post(f"/v1/quarantines/{hold['id']}/lift", {"reason": "cleaned"}, role="abuse")


def test_reports_climb_the_ladder_and_hits_during_a_hold_do_not_count(
    api: Api, world: World
) -> None:
    _bind(api, "cust-1", "100.64.0.7")
    _policy(api)
    _report(api, "100.64.0.7", "m1")
    result = _pass(api)
    assert result.strikes == {"enforced": 1}
    [hold] = _holds(api, "cust-1")
    assert (hold["mode"], hold["actor"]) == ("walled-garden", "policy:spam-ladder")
    expires = hold["expires_at"]
    assert expires is not None
    # Audited as the policy, with the report that made the strike.
    [created] = audit.listing(
        api.store, audit.AuditFilter(actor="policy:spam-ladder", action="quarantine.create")
    )
    [item] = created["after"]["evidence"]["items"]
    assert item["class"] == "spam" and item["address"] == "100.64.0.7"
    # More complaints about the same run while held: absorbed, no strike 2.
    _report(api, "100.64.0.7", "m2", ago=30)
    _report(api, "100.64.0.7", "m3", ago=20)
    result = _pass(api)
    assert result.strikes == {} and result.absorbed == 2
    # Released, then spamming again: strike 2 -> smtp.
    _lift(api, "cust-1")
    _report(api, "100.64.0.7", "m4", ago=1)
    assert _pass(api).strikes == {"enforced": 1}
    [hold] = _holds(api, "cust-1")
    assert hold["mode"] == "smtp"
    # Nothing new: a pass acts on nothing twice.
    assert _pass(api).strikes == {}
    _lift(api, "cust-1")
    _report(api, "100.64.0.7", "m5", ago=0.5)
    _pass(api)
    [hold] = _holds(api, "cust-1")
    assert hold["mode"] == "block" and hold["expires_at"] is None  # flagged for review


def test_informational_classes_never_act(api: Api, world: World) -> None:
    _bind(api, "cust-1", "100.64.0.7")
    bad = {**LADDER, "strikes": [{"source": "report", "class": "scan"}]}
    answer = api.call("PUT", "/v1/policies/p", json={"mode": "enforce", **bad}, expect=422)
    assert answer.json()["detail"][0]["field"] == "strikes[0].class"
    _policy(api)
    _report(api, "100.64.0.7", "s1", cls="scan")
    _report(api, "100.64.0.7", "s2", cls="open-service")
    assert _pass(api).strikes == {}
    assert _holds(api, "cust-1") == []


def test_policy_fields_are_checked_by_name(api: Api) -> None:
    cases = [
        ({"steps": [{"strike": 2, "mode": "smtp", "duration": 60}]}, "steps[0].strike"),
        ({"steps": [{"strike": 1, "mode": "jail", "duration": 60}]}, "steps[0].mode"),
        ({"steps": [{"strike": 1, "mode": "smtp"}]}, "steps[0].duration"),
        ({"steps": [{"strike": 1, "mode": "smtp", "duration": 10**9}]}, "steps[0].duration"),
        ({"strikes": [{"source": "offender", "kind": "ratelimit"}]}, "strikes[0].threshold"),
        (
            {"strikes": [{"source": "offender", "kind": "quarantine", "threshold": 5}]},
            "strikes[0].kind",
        ),
        ({"window": 1}, "spec.window"),
    ]
    for change, field in cases:
        body = {"mode": "enforce", **LADDER, **change}
        answer = api.call("PUT", "/v1/policies/p", json=body, expect=422)
        assert answer.json()["detail"][0]["field"] == field, (change, answer.text)
    api.call("PUT", "/v1/policies/p", json={"mode": "sometimes", **LADDER}, expect=422)
    assert api.get("/v1/policies", role="viewer") == []
    api.call("PUT", "/v1/policies/p", json={"mode": "enforce", **LADDER}, role="abuse", expect=403)


def test_propose_mode_creates_a_proposal_and_no_hold_until_approved(api: Api, world: World) -> None:
    _bind(api, "cust-1", "100.64.0.7")
    _bind(api, "cust-2", "100.64.0.8")
    _policy(api, "propose")
    _report(api, "100.64.0.7", "a")
    _report(api, "100.64.0.8", "b")
    _report(api, "100.64.0.8", "c", ago=30)  # absorbed: cust-2 has a pending proposal
    assert _pass(api).strikes == {"proposed": 2}
    assert _holds(api, "cust-1") == [] and _holds(api, "cust-2") == []
    pending = {p["account"]: p for p in api.get("/v1/proposals", role="viewer")}
    assert set(pending) == {"cust-1", "cust-2"}
    assert pending["cust-1"]["mode"] == "walled-garden" and pending["cust-1"]["why"] == "propose"
    approved = api.post(
        f"/v1/proposals/{pending['cust-1']['id']}/approve", {"reason": "ok"}, role="abuse"
    )
    assert approved["state"] == "approved" and approved["decided_by"] == "token:test-abuse"
    [hold] = _holds(api, "cust-1")
    assert hold["quarantine" if False else "mode"] == "walled-garden"
    assert hold["id"] == approved["quarantine"]
    api.post(
        f"/v1/proposals/{pending['cust-2']['id']}/reject",
        {"reason": "false positive"},
        role="abuse",
    )
    assert _holds(api, "cust-2") == []
    # Decided once: a second decision is a conflict.
    api.call(
        "POST",
        f"/v1/proposals/{pending['cust-2']['id']}/approve",
        json={"reason": "x"},
        role="abuse",
        expect=409,
    )
    # The rejected strike does not count: cust-2's next one is strike 1 again.
    _report(api, "100.64.0.8", "d", ago=1)
    _pass(api)
    [again] = api.get("/v1/proposals", role="viewer")
    assert (again["account"], again["strike"], again["mode"]) == ("cust-2", 1, "walled-garden")


def test_dry_run_records_what_it_would_do(api: Api, world: World) -> None:
    _bind(api, "cust-1", "100.64.0.7")
    _policy(api, "dry-run")
    _report(api, "100.64.0.7", "a")
    _report(api, "100.64.0.7", "b", ago=30)  # within the simulated hold: absorbed
    result = _pass(api)
    assert result.strikes == {"dry-run": 1} and result.absorbed == 1
    assert _holds(api, "cust-1") == [] and api.get("/v1/proposals", role="viewer") == []
    [record] = audit.listing(api.store, audit.AuditFilter(action="policy.strike"))
    assert record["actor"] == "policy:spam-ladder"
    assert record["after"]["outcome"] == "dry-run" and record["after"]["mode"] == "walled-garden"


def test_an_exempt_account_is_not_held_unless_forced(api: Api, world: World) -> None:
    _bind(api, "cust-1", "100.64.0.7")
    api.post(
        "/v1/exemptions", {"account": "cust-1", "ticket": "T-1", "reason": "own MTA"}, role="abuse"
    )
    _policy(api)
    _report(api, "100.64.0.7", "a")
    assert _pass(api).strikes == {"exempt": 1}
    assert _holds(api, "cust-1") == []
    [proposal] = api.get("/v1/proposals", role="viewer")
    assert proposal["why"] == "exempt"
    path = f"/v1/proposals/{proposal['id']}/approve"
    refused = api.call("POST", path, json={"reason": "x"}, role="abuse", expect=409)
    assert "exemption" in refused.json()["detail"]
    api.post(path, {"reason": "abuse outweighs the exemption", "force": True}, role="abuse")
    assert len(_holds(api, "cust-1")) == 1


def test_brakes_turn_actions_past_the_cap_into_proposals_with_one_alert(
    api: Api, world: World
) -> None:
    _policy(api)
    for n in range(6):
        _bind(api, f"cust-{n}", f"100.64.0.{10 + n}")
        # Reports of days ago: the brakes count when the action is taken, not the evidence.
        _report(api, f"100.64.0.{10 + n}", f"r{n}", ago=3 * 86_400 - n)
    result = _pass(api, escalation_fleet_per_hour=4, escalation_pool_per_hour=2)
    assert result.strikes == {"enforced": 2, "braked": 4}  # one pool: its cap binds first
    assert result.brake_alerts == 1
    held = api.get("/v1/quarantines", role="viewer")
    assert len(held) == 2
    assert {p["why"] for p in api.get("/v1/proposals", role="viewer")} == {"brake"}
    alerts = audit.listing(api.store, audit.AuditFilter(action="policy.brake"))
    assert len(alerts) == 1
    # A pass later (the same hour): the pool's cap still binds, and no second alert.
    _bind(api, "cust-9", "100.64.0.30")
    _report(api, "100.64.0.30", "r9", ago=2 * 86_400)
    again = _pass(api, escalation_fleet_per_hour=4, escalation_pool_per_hour=2)
    assert again.strikes == {"braked": 1} and again.brake_alerts == 0
    metrics = api.client.get("/metrics", headers=api.headers("viewer")).text
    assert "edgectl_controller_escalation_strikes_total" in metrics


def _offenders(store: Store, gateway: str, key: str, events: int, first_seen: Any) -> None:
    gid = gateways.gateway_id(store, gateway)
    entry = offenders.Offender(
        Prefix.parse(key), "ratelimit", "residential", False, events, first_seen, now()
    )
    with store.write(f"agent:{gateway}") as change:
        offenders.replace(change, gid, offenders.OffenderReport(True, None, 900, (entry,)))


def test_offenders_above_a_threshold_make_strikes(api: Api, world: World) -> None:
    _bind(api, "cust-1", "100.64.0.7")
    ladder = {**LADDER, "strikes": [{"source": "offender", "kind": "ratelimit", "threshold": 50}]}
    _policy(api, ladder=ladder)
    first = now() - timedelta(seconds=60)
    _offenders(api.store, "gw-a", "100.64.0.7", 30, first)
    assert _pass(api).strikes == {}  # under the threshold: waits for more
    _offenders(api.store, "gw-a", "100.64.0.7", 55, first)
    assert _pass(api).strikes == {"enforced": 1}
    [hold] = _holds(api, "cust-1")
    assert hold["mode"] == "walled-garden"
    [created] = audit.listing(api.store, audit.AuditFilter(action="quarantine.create"))
    episode = created["after"]["evidence"]["items"][0]
    assert (episode["gateway"], episode["key"], episode["events"]) == ("gw-a", "100.64.0.7", 55)
    # Hits while held (the entry still growing) are absorbed, not a strike 2.
    _offenders(api.store, "gw-a", "100.64.0.7", 200, first)
    assert _pass(api).strikes == {}
    _lift(api, "cust-1")
    _offenders(api.store, "gw-a", "100.64.0.7", 220, first)
    assert _pass(api).strikes == {}  # 20 new since the hold: under 50
    _offenders(api.store, "gw-a", "100.64.0.7", 260, first)
    assert _pass(api).strikes == {"enforced": 1}
    [hold] = _holds(api, "cust-1")
    assert hold["mode"] == "smtp"


def test_replay_says_what_a_policy_would_have_done_and_acts_on_nothing(
    api: Api, world: World
) -> None:
    for n in range(3):
        _bind(api, f"cust-{n}", f"100.64.0.{10 + n}")
    # cust-0: three spam runs a day apart; cust-1: one; cust-2: a scan (informational).
    for day in range(3):
        _report(api, "100.64.0.10", f"a{day}", ago=(3 - day) * 86_400)
    _report(api, "100.64.0.11", "b", ago=3600)
    _report(api, "100.64.0.12", "c", cls="scan", ago=3600)
    _policy(
        api,
        "dry-run",
        {
            **LADDER,
            "steps": [
                {"strike": 1, "mode": "walled-garden", "duration": 3600},
                {"strike": 2, "mode": "smtp", "duration": 3600},
                {"strike": 3, "mode": "block", "review": True},
            ],
        },
    )
    since = (now() - timedelta(days=5)).isoformat()
    until = now().isoformat()
    result = api.post(
        "/v1/policies/spam-ladder/replay", {"since": since, "until": until}, role="abuse"
    )
    assert result["strikes"] == 4 and result["accounts"] == 2
    assert [s["count"] for s in result["steps"]] == [2, 1, 1]
    assert result["steps"][0]["accounts"] == ["cust-0", "cust-1"]
    assert result["steps"][2]["accounts"] == ["cust-0"]
    assert api.get("/v1/proposals?state=all", role="viewer") == []
    assert api.get("/v1/quarantines", role="viewer") == []
    assert audit.listing(api.store, audit.AuditFilter(action="policy.strike")) == []


def test_policies_load_from_a_file_all_or_nothing(api: Api) -> None:
    good = {"name": "fbl", "mode": "propose", **LADDER}
    bad = {"name": "bad", "mode": "enforce", **LADDER, "window": 0}
    with pytest.raises(Exception) as caught:
        policies.load(api.store, "ansible", {"policy": [good, bad]})
    assert getattr(caught.value, "path", "") == "policy[1].spec.window"
    assert policies.listing(api.store) == []
    assert policies.load(api.store, "ansible", {"policy": [good]}) == ["fbl"]
    assert policies.get(api.store, "fbl")["mode"] == "propose"


def test_only_one_controller_leads_on_postgresql(store: Store) -> None:
    first, second = engine.Leader(store), engine.Leader(store)
    try:
        assert first.acquire()
        if store.database.dialect != "postgresql":
            assert second.acquire()  # SQLite: one process per file, it just runs
            return
        assert not second.acquire()
        assert first.acquire()  # still leading
        first.release()
        assert second.acquire()
        assert not first.acquire()
    finally:
        first.release()
        second.release()


def test_the_running_controller_escalates_in_the_background(store: Store) -> None:
    app = create_app(
        settings_for(store, escalation_interval=0.05), store, sweep=False, escalate=True
    )
    with TestClient(app) as client:
        api = Api(client, store)
        World(api)
        _bind(api, "cust-1", "100.64.0.7")
        _policy(api)
        _report(api, "100.64.0.7", "m1")
        wait_until(lambda: _holds(api, "cust-1"), timeout=10, what="the engine never held")
        [hold] = _holds(api, "cust-1")
        assert hold["actor"] == "policy:spam-ladder"
        scrape = client.get("/metrics", headers=api.headers("viewer")).text
        assert "edgectl_controller_escalation_leader 1" in scrape
        assert "edgectl_controller_escalation_passes_total 0" not in scrape
        assert 'edgectl_controller_escalation_strikes_total{outcome="enforced"} 1' in scrape


def test_a_new_policy_punishes_no_backlog_of_offender_events(api: Api, world: World) -> None:
    _bind(api, "cust-1", "100.64.0.7")
    first = now() - timedelta(seconds=60)
    _offenders(api.store, "gw-a", "100.64.0.7", 80, first)
    _pass(api)  # no policy yet: the episode is only recorded
    ladder = {**LADDER, "strikes": [{"source": "offender", "kind": "ratelimit", "threshold": 50}]}
    _policy(api, ladder=ladder)
    assert _pass(api).strikes == {}
    _offenders(api.store, "gw-a", "100.64.0.7", 130, first)  # 50 more after it began
    assert _pass(api).strikes == {"enforced": 1}


def test_offender_episodes_past_the_retention_are_forgotten(api: Api, world: World) -> None:
    _bind(api, "cust-1", "100.64.0.7")
    _offenders(api.store, "gw-a", "100.64.0.7", 10, now() - timedelta(seconds=60))
    _pass(api)
    assert episodes.purge(api.store, 1) == 0  # last event a minute ago: kept
    with api.store.database.write() as connection:
        connection.execute(
            sa.update(t.offender_episodes).values(last_seen=now() - timedelta(days=2))
        )
    assert episodes.purge(api.store, 1) == 1
    assert episodes.purge(api.store, 1) == 0


def test_deleting_a_policy_keeps_its_holds_and_drops_its_pending_proposals(
    api: Api, world: World
) -> None:
    _bind(api, "cust-1", "100.64.0.7")
    _bind(api, "cust-2", "100.64.0.8")
    _policy(api)
    _report(api, "100.64.0.7", "a")
    _pass(api)
    api.put("/v1/policies/spam-ladder", {"mode": "propose", **LADDER})  # replaced, same strikes
    _report(api, "100.64.0.8", "b")
    _pass(api)
    assert len(api.get("/v1/proposals", role="viewer")) == 1
    api.call("DELETE", "/v1/policies/spam-ladder", expect=204)
    assert api.get("/v1/proposals?state=all", role="viewer") == []
    assert [h["actor"] for h in _holds(api, "cust-1")] == ["policy:spam-ladder"]
    api.call("GET", "/v1/policies/spam-ladder", role="viewer", expect=404)
    api.call("DELETE", "/v1/policies/spam-ladder", expect=404)
