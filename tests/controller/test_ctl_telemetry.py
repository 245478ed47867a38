"""What agents report back: convergence per gateway, offenders, and /metrics."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from ctl_plans import recorded
from ctl_support import Api, World

from edgectl.controller.store import offenders as store_offenders
from edgectl.controller.store import schema as t
from edgectl.controller.store import sweep

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def revision(api: Api, gateway: str) -> int:
    return int(api.get(f"/v1/gateways/{gateway}")["revision"])


def report(api: Api, token: str, gateway: str, applied: int, **body: Any) -> Any:
    return api.post(
        f"/v1/gateways/{gateway}/status", {"applied_revision": applied, **body}, role=token
    )


def entry(key: str, kind: str = "op25b", policy: str = "dyn_a", **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "kind": kind,
        "policy": policy,
        "shadow": False,
        "count": 1,
        "first_seen": iso(T0),
        "last_seen": iso(T0 + timedelta(seconds=30)),
        **extra,
    }


def offenders(*entries: dict[str, Any], available: bool = True, **extra: Any) -> dict[str, Any]:
    return {"available": available, "window_seconds": 300, "entries": list(entries), **extra}


def hold(api: Api, account: str) -> None:
    api.post(
        "/v1/quarantines", {"account": account, "mode": "smtp", "reason": "spam"}, role="abuse"
    )


def backdate(api: Api, gateway: str, seq: int, seconds: float) -> None:
    """Pretend the controller wanted ``seq`` of ``gateway`` ``seconds`` ago (its
    own revision time, or its entry scope's)."""
    r, sr = t.revisions, t.scope_revisions
    at = datetime.now(UTC) - timedelta(seconds=seconds)
    with api.store.database.write() as connection:
        row = connection.execute(
            sa.select(t.gateways.c.id, t.gateways.c.scope_id).where(t.gateways.c.name == gateway)
        ).one()
        updated = connection.execute(
            sa.update(r).where(r.c.gateway_id == row.id, r.c.seq == seq).values(at=at)
        ).rowcount
        updated += connection.execute(
            sa.update(sr).where(sr.c.scope_id == row.scope_id, sr.c.seq == seq).values(at=at)
        ).rowcount
        assert updated == 1


def revision_rows(api: Api, gateway: str) -> list[int]:
    """The revision times kept for ``gateway``: its own and its scope's since it joined."""
    r, sr, g = t.revisions, t.scope_revisions, t.gateways
    with api.store.read() as connection:
        own = sa.select(r.c.seq).join(g, g.c.id == r.c.gateway_id).where(g.c.name == gateway)
        scoped = (
            sa.select(sr.c.seq)
            .join(g, g.c.scope_id == sr.c.scope_id)
            .where(g.c.name == gateway, sr.c.seq > g.c.scope_seq)
        )
        return sorted({*connection.execute(own).scalars(), *connection.execute(scoped).scalars()})


# Convergence ----------------------------------------------------------------------


def test_convergence_before_and_after_a_report(api: Api, world: World) -> None:
    gateway = api.get("/v1/gateways/gw-a")
    view = gateway["convergence"]
    assert view["wanted_revision"] == gateway["revision"]
    assert view["applied_revision"] is None
    assert view["converged"] is False and gateway["converged"] is False
    assert view["last_seen"] is None and view["seconds_since_seen"] is None
    # Never reported: behind since the gateway was created.
    assert view["lag_seconds"] is not None and 0 <= view["lag_seconds"] < 60
    assert gateway["offenders"] is None

    reported = report(api, world.agent_a, "gw-a", gateway["revision"])
    view = reported["convergence"]
    assert view["applied_revision"] == view["wanted_revision"] == gateway["revision"]
    assert view["converged"] is True and reported["converged"] is True
    assert view["lag_seconds"] is None
    assert view["last_seen"] == reported["status"]["reported_at"]
    assert 0 <= view["seconds_since_seen"] < 60
    listed = {g["name"]: g for g in api.get("/v1/gateways")}
    assert listed["gw-a"]["convergence"]["converged"] is True
    assert listed["gw-b"]["convergence"]["converged"] is False


def test_lag_runs_from_the_first_revision_not_applied(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    api.put("/v1/accounts/bob/session", {"ipv4": "100.64.0.11"})
    first = revision(api, "gw-a")
    report(api, world.agent_a, "gw-a", first)
    hold(api, "alice")
    second = revision(api, "gw-a")
    backdate(api, "gw-a", second, 600)
    hold(api, "bob")
    third = revision(api, "gw-a")
    backdate(api, "gw-a", third, 100)
    assert first < second < third

    view = api.get("/v1/gateways/gw-a")["convergence"]
    assert view["converged"] is False
    assert view["wanted_revision"] == third and view["applied_revision"] == first
    assert 600 <= view["lag_seconds"] < 700  # since the older of the two changes

    view = report(api, world.agent_a, "gw-a", second)["convergence"]
    assert 100 <= view["lag_seconds"] < 200  # now since the newer one
    assert revision_rows(api, "gw-a") == [third]

    view = report(api, world.agent_a, "gw-a", third)["convergence"]
    assert view["converged"] is True and view["lag_seconds"] is None
    assert revision_rows(api, "gw-a") == [third]  # the current revision's time stays

    # An agent that comes back with an older state is behind again, and shows it.
    view = report(api, world.agent_a, "gw-a", first)["convergence"]
    assert view["converged"] is False and view["lag_seconds"] >= 100


def test_sweep_forgets_old_revision_times_but_not_the_lag(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    api.put("/v1/accounts/bob/session", {"ipv4": "100.64.0.11"})
    created = revision(api, "gw-a")
    hold(api, "alice")
    middle = revision(api, "gw-a")
    hold(api, "bob")
    current = revision(api, "gw-a")
    for seq, age in ((created, 3000), (middle, 2000), (current, 1000)):
        backdate(api, "gw-a", seq, age)
    assert sweep.forget_revisions(api.store, 500) == 1  # the middle one only
    assert revision_rows(api, "gw-a") == [created, current]
    assert api.get("/v1/gateways/gw-a")["convergence"]["lag_seconds"] >= 3000
    assert sweep.forget_revisions(api.store, 500) == 0


def test_sweep_of_revision_times_reads_every_gateway_in_one_statement(
    api: Api, world: World
) -> None:
    """gw-a reported nothing (its first revision measures its lag), gw-b reported
    one and is three behind; the check costs one statement however many
    gateways."""
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    api.put("/v1/accounts/bob/session", {"ipv4": "100.65.0.11"})
    a_created = revision(api, "gw-a")
    b_reported = revision(api, "gw-b")
    report(api, world.agent_b, "gw-b", b_reported)  # its time stays: it is current
    hold(api, "alice")
    hold(api, "bob")
    a_current, b_first = revision(api, "gw-a"), revision(api, "gw-b")
    api.put("/v1/accounts/bob/session", {"ipv4": "100.65.0.12"})
    b_second = revision(api, "gw-b")
    api.put("/v1/accounts/bob/session", {"ipv4": "100.65.0.13"})
    b_current = revision(api, "gw-b")
    assert revision_rows(api, "gw-b") == [b_reported, b_first, b_second, b_current]
    old = (("gw-a", a_created), ("gw-b", b_reported), ("gw-b", b_first), ("gw-b", b_second))
    for gateway, seq in old:
        backdate(api, gateway, seq, 3000)
    for gateway, seq in (("gw-a", a_current), ("gw-b", b_current)):
        backdate(api, gateway, seq, 2000)
    with recorded(api.store) as statements:
        assert sweep.forget_revisions(api.store, 5000) == 0
    # (The app's own re-check may run meanwhile: it reads no revision times.)
    reads = [sql for sql, _ in statements if "gateway_revisions" in sql]
    assert len(reads) == 1, reads
    # Each gateway's first unapplied revision (its lag) and current one stay.
    assert sweep.forget_revisions(api.store, 500) == 2
    assert revision_rows(api, "gw-a") == [a_created, a_current]
    assert revision_rows(api, "gw-b") == [b_first, b_current]


# Offenders ---------------------------------------------------------------------------


def test_offenders_round_trip_and_aggregate(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.1.7"})
    api.put("/v1/accounts/bob/session", {"ipv6": "2001:db8:a000:100::/56"})
    api.put("/v1/accounts/carol/session", {"ipv6": "2001:db8:a000:240::/64"})  # inside a /56
    later = T0 + timedelta(minutes=5)
    from_a = offenders(
        entry("100.64.1.7/32", count=5),
        entry("2001:db8:a000:100::/56", kind="ratelimit", policy="residential", count=9),
        entry("2001:db8:a000:200::/56", kind="concurrency", policy="residential", shadow=True),
        entry("100.64.1.99", kind="quarantine", policy="smtp", count=2),
    )
    from_b = offenders(
        entry(
            "100.64.1.7", count=4, first_seen=iso(T0 - timedelta(minutes=1)), last_seen=iso(later)
        ),
        entry(
            "2001:db8:b000::/64",
            kind="destinationlimit",
            policy="residential",
            count=3,
            first_seen="2026-03-01T12:00:00.000+00:00",  # as the agent writes times
            last_seen="2026-03-01T13:00:00.250+01:00",
        ),
    )
    gw_a = report(api, world.agent_a, "gw-a", revision(api, "gw-a"), offenders=from_a)
    assert gw_a["offenders"] == {
        "available": True,
        "reason": None,
        "window_seconds": 300,
        "count": 4,
        "reported_at": gw_a["status"]["reported_at"],
    }
    report(api, world.agent_b, "gw-b", revision(api, "gw-b"), offenders=from_b)

    found = api.get("/v1/offenders", role="abuse")
    assert [(o["key"], o["count"]) for o in found] == [
        ("100.64.1.7", 9),
        ("2001:db8:a000:100::/56", 9),
        ("2001:db8:b000::/64", 3),
        ("100.64.1.99", 2),
        ("2001:db8:a000:200::/56", 1),
    ]
    first = found[0]
    assert first == {
        "key": "100.64.1.7",
        "kind": "op25b",
        "policy": "dyn_a",
        "shadow": False,
        "count": 9,
        "first_seen": iso(T0 - timedelta(minutes=1)),
        "last_seen": iso(later),
        "gateways": ["gw-a", "gw-b"],
        "account": "alice",
    }
    owners = {o["key"]: o["account"] for o in found}
    assert owners == {
        "100.64.1.7": "alice",
        "2001:db8:a000:100::/56": "bob",  # the session is the key
        "2001:db8:a000:200::/56": "carol",  # the session lies inside the key
        "2001:db8:b000::/64": None,  # nobody holds it now
        "100.64.1.99": None,
    }
    assert found[-1]["shadow"] is True

    only_b = api.get("/v1/offenders", params={"gateway": "gw-b"}, role="viewer")
    assert [(o["key"], o["count"], o["gateways"]) for o in only_b] == [
        ("100.64.1.7", 4, ["gw-b"]),
        ("2001:db8:b000::/64", 3, ["gw-b"]),
    ]
    kinds = api.get("/v1/offenders", params={"kind": "ratelimit"})
    assert [o["key"] for o in kinds] == ["2001:db8:a000:100::/56"]
    assert len(api.get("/v1/offenders", params={"limit": 2})) == 2

    # A report without offenders (an older agent) keeps them; one with replaces them.
    report(api, world.agent_a, "gw-a", revision(api, "gw-a"), detail={"elements": 1})
    assert len(api.get("/v1/offenders", params={"gateway": "gw-a"})) == 4
    unavailable = offenders(available=False, reason="settings.log_group is not set")
    gw_a = report(api, world.agent_a, "gw-a", revision(api, "gw-a"), offenders=unavailable)
    assert gw_a["offenders"]["available"] is False
    assert gw_a["offenders"]["reason"] == "settings.log_group is not set"
    assert gw_a["offenders"]["count"] == 0
    assert api.get("/v1/offenders", params={"gateway": "gw-a"}) == []
    assert [o["count"] for o in api.get("/v1/offenders")] == [4, 3]

    api.call("DELETE", "/v1/gateways/gw-b", expect=204)
    assert api.get("/v1/offenders") == []
    api.call("GET", "/v1/offenders", params={"gateway": "gw-b"}, expect=404)
    with api.store.read() as connection:
        assert connection.execute(sa.select(t.offenders)).all() == []
        assert len(connection.execute(sa.select(t.offender_reports)).all()) == 1  # gw-a's


def test_offenders_of_a_gateway_nobody_has_is_404(api: Api, world: World) -> None:
    response = api.call("GET", "/v1/offenders", params={"gateway": "gw-none"}, expect=404)
    assert response.json() == {"detail": "no gateway named 'gw-none'"}
    # One that exists but has not reported offenders lists nothing.
    assert api.get("/v1/offenders", params={"gateway": "gw-a"}) == []


def test_a_new_report_replaces_through_forget(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One function knows which tables hold a gateway's offenders: a table
    # added to forget() is then cleared by every replace() too.
    cleared: list[int] = []
    forget = store_offenders.forget

    def spy(change: Any, gateway: int) -> None:
        cleared.append(gateway)
        forget(change, gateway)

    monkeypatch.setattr(store_offenders, "forget", spy)
    for count in (2, 5):
        body = offenders(entry("100.64.0.1", count=count))
        report(api, world.agent_a, "gw-a", revision(api, "gw-a"), offenders=body)
    assert len(cleared) == 2 and len(set(cleared)) == 1
    assert [o["count"] for o in api.get("/v1/offenders")] == [5]


def stored(api: Api) -> list[Any]:
    with api.store.read() as connection:
        return [
            sorted(tuple(str(v) for v in row) for row in connection.execute(sa.select(table)))
            for table in (t.offenders, t.offender_reports, t.gateway_status)
        ]


BAD_ENTRIES: list[tuple[Any, str]] = [
    (entry("100.64.1.0/24"), "offenders.entries.1.key"),
    (entry("100.64.1.7/33"), "offenders.entries.1.key"),
    (entry("100.64.1.7/31"), "offenders.entries.1.key"),  # host bits
    (entry("2001:db8:a000:101::/56"), "offenders.entries.1.key"),  # host bits
    (entry("2001:db8::1"), "offenders.entries.1.key"),  # a /128 is not a subscriber
    (entry("2001:db8::/16"), "offenders.entries.1.key"),
    (entry("not-an-ip"), "offenders.entries.1.key"),
    (entry("100.64.1.7", kind="spam"), "offenders.entries.1.kind"),
    (entry("100.64.1.7", count=0), "offenders.entries.1.count"),
    (entry("100.64.1.7", count=-1), "offenders.entries.1.count"),
    (entry("100.64.1.7", policy=""), "offenders.entries.1.policy"),
    (entry("100.64.1.7", policy="x\u0000"), "offenders.entries.1.policy"),
    (entry("100.64.1.7", first_seen="2026-03-01T12:00:00"), "offenders.entries.1.first_seen"),
    (
        entry("100.64.1.7", first_seen=iso(T0 + timedelta(hours=1))),
        "offenders.entries.1.first_seen",
    ),
    (entry("100.64.1.7", shadow="perhaps"), "offenders.entries.1.shadow"),
    (entry("100.64.1.7", colour="red"), "offenders.entries.1.colour"),
    (entry("100.64.0.1"), "offenders.entries.1"),  # the same (key, kind, policy, shadow)
]


def test_each_bad_offenders_report_is_422_and_changes_nothing(api: Api, world: World) -> None:
    good = offenders(entry("100.64.0.1", count=3))
    applied = revision(api, "gw-a")
    report(api, world.agent_a, "gw-a", applied, offenders=good)
    path = "/v1/gateways/gw-a/status"
    before = stored(api)
    cases: list[tuple[Any, str]] = [
        *((offenders(entry("100.64.0.1"), bad), where) for bad, where in BAD_ENTRIES),
        (
            offenders(*(entry(f"100.64.{i // 250}.{i % 250}") for i in range(1001))),
            "offenders.entries",
        ),
        (offenders(window_seconds=0), "offenders.window_seconds"),
        (offenders(window_seconds=86401), "offenders.window_seconds"),
        ({"available": True, "entries": []}, "offenders.window_seconds"),
        (offenders(reason="x" * 501), "offenders.reason"),
        ("all of them", "offenders"),
    ]
    for body, where in cases:
        response = api.call(
            "POST",
            path,
            role=world.agent_a,
            json={"applied_revision": applied, "offenders": body},
        )
        assert response.status_code == 422, (where, response.text)
        loc = response.json()["detail"][0]["loc"]
        assert ".".join(str(part) for part in loc[1:]).startswith(where), (where, loc)
        assert stored(api) == before, where
    assert [o["count"] for o in api.get("/v1/offenders")] == [3]


def test_shadow_and_refused_entries_stay_apart(api: Api, world: World) -> None:
    # While a profile is switched out of shadow mode, the agent reports both.
    both = offenders(
        entry("100.64.0.1", kind="ratelimit", policy="residential", shadow=True, count=4),
        entry("100.64.0.1", kind="ratelimit", policy="residential", shadow=False, count=2),
        available=False,  # the listener stopped since; what it saw is still evidence
        reason="listener failed (OSError: boom); restarting",
    )
    gateway = report(api, world.agent_a, "gw-a", revision(api, "gw-a"), offenders=both)
    assert gateway["offenders"]["available"] is False
    assert gateway["offenders"]["count"] == 2
    found = api.get("/v1/offenders")
    assert [(o["shadow"], o["count"]) for o in found] == [(True, 4), (False, 2)]
    series = scrape(api)
    assert series[("edgectl_controller_gateway_offenders", gw("gw-a"))] == 2
    assert series[("edgectl_controller_gateway_offenders_available", gw("gw-a"))] == 0


def test_readers_only(api: Api, world: World) -> None:
    for path in ("/v1/offenders", "/metrics"):
        for role in ("viewer", "abuse", "netops"):
            api.call("GET", path, role=role, expect=200)
        api.call("GET", path, role=world.agent_a, expect=403)
        response = api.call("GET", path, role=None, expect=401)
        assert response.headers["www-authenticate"] == "Bearer"
    for query in ({"kind": "spam"}, {"limit": 0}, {"limit": 1001}, {"gateway": "GW A"}):
        api.call("GET", "/v1/offenders", params=query, role="viewer", expect=422)


# /metrics ------------------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def parse(text: str) -> tuple[Series, dict[str, str]]:
    """Text format 0.0.4, strictly: HELP then TYPE before a family's samples, no repeats."""
    assert text.endswith("\n")
    series: Series = {}
    kinds: dict[str, str] = {}
    helped: set[str] = set()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert re.fullmatch(_NAME, name) and name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in kinds, line
            assert kind in ("gauge", "counter"), line
            kinds[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, line
            name, body, value = match.groups()
            assert name in kinds, f"sample before its TYPE: {line}"
            labels: list[tuple[str, str]] = []
            if body:
                position = 0
                while position < len(body):
                    label = _LABEL.match(body, position)
                    assert label, line
                    labels.append((label.group(1), _unescape(label.group(2))))
                    position = label.end()
            key = (name, frozenset(labels))
            assert key not in series, f"repeated series: {line}"
            series[key] = float(value)
    return series, kinds


def scrape(api: Api, role: str = "viewer") -> Series:
    response = api.call("GET", "/metrics", role=role, expect=200)
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    series, kinds = parse(response.text)
    assert kinds["edgectl_controller_dropped_packets_total"] == "counter"
    return series


def gw(name: str, **labels: str) -> frozenset[tuple[str, str]]:
    return frozenset({("gateway", name), *labels.items()})


def test_metrics_show_what_agents_reported(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    hold(api, "alice")
    wanted = revision(api, "gw-a")
    detail = {
        "drift_repairs": 3,
        "seconds_since_sync": 2.5,
        "counters": {
            "op25b_drop": {"policy": "op25b", "packets": 7, "bytes": 420},
            "rate_new": {"policy": "rate_limit", "packets": 2, "bytes": 120},
        },
    }
    report(
        api,
        world.agent_a,
        "gw-a",
        wanted,
        detail=detail,
        offenders=offenders(entry("100.64.0.10"), entry("100.64.0.11")),
    )
    series = scrape(api)
    assert series[("edgectl_controller_gateway_wanted_revision", gw("gw-a"))] == wanted
    assert series[("edgectl_controller_gateway_applied_revision", gw("gw-a"))] == wanted
    assert series[("edgectl_controller_gateway_converged", gw("gw-a"))] == 1
    assert series[("edgectl_controller_gateway_lag_seconds", gw("gw-a"))] == 0
    assert 0 <= series[("edgectl_controller_gateway_seconds_since_report", gw("gw-a"))] < 60
    assert series[("edgectl_controller_gateway_drift_repairs", gw("gw-a"))] == 3
    assert 2.5 <= series[("edgectl_controller_gateway_seconds_since_sync", gw("gw-a"))] < 60
    assert series[("edgectl_controller_gateway_offenders", gw("gw-a"))] == 2
    assert series[("edgectl_controller_gateway_offenders_available", gw("gw-a"))] == 1
    op25b = gw("gw-a", policy="op25b", counter="op25b_drop")
    assert series[("edgectl_controller_dropped_packets_total", op25b)] == 7
    assert series[("edgectl_controller_dropped_bytes_total", op25b)] == 420
    rate = gw("gw-a", policy="rate_limit", counter="rate_new")
    assert series[("edgectl_controller_dropped_packets_total", rate)] == 2
    # gw-b never reported: behind since it was created, nothing from its agent.
    assert series[("edgectl_controller_gateway_applied_revision", gw("gw-b"))] == -1
    assert series[("edgectl_controller_gateway_converged", gw("gw-b"))] == 0
    assert series[("edgectl_controller_gateway_lag_seconds", gw("gw-b"))] >= 0
    assert ("edgectl_controller_gateway_seconds_since_report", gw("gw-b")) not in series
    assert ("edgectl_controller_gateway_offenders", gw("gw-b")) not in series
    with api.store.read() as connection:
        seq = api.store.current_seq(connection)
    assert series[("edgectl_controller_revision", frozenset())] == seq
    assert series[("edgectl_controller_gateways", frozenset())] == 2
    modes = {
        dict(labels)["mode"]: value
        for (name, labels), value in series.items()
        if name == "edgectl_controller_quarantines"
    }
    assert modes == {"smtp": 1, "walled-garden": 0, "block": 0}


def test_malformed_detail_does_not_break_metrics(api: Api, world: World) -> None:
    weird = {
        "drift_repairs": "many",
        "seconds_since_sync": -1,
        "counters": {
            "ok": {"policy": "op25b", "packets": 1, "bytes": 2},
            'quote"back\\slash': {"policy": "quarantine", "packets": 5, "bytes": 6},
            "new\nline": {"policy": "op25b", "packets": 1, "bytes": 1},
            "no_policy": {"packets": 3, "bytes": True},
            "odd_policy": {"policy": ["x"], "packets": 4, "bytes": -1},
            "not_a_map": 17,
            "": {"policy": "op25b", "packets": 1, "bytes": 1},
        },
    }
    report(api, world.agent_a, "gw-a", revision(api, "gw-a"), detail=weird)
    report(api, world.agent_b, "gw-b", revision(api, "gw-b"), detail={"counters": {"error": "x"}})
    series = scrape(api)
    assert ("edgectl_controller_gateway_drift_repairs", gw("gw-a")) not in series
    assert ("edgectl_controller_gateway_seconds_since_sync", gw("gw-a")) not in series
    dropped = {
        dict(labels)["counter"]: (dict(labels)["policy"], value)
        for (name, labels), value in series.items()
        if name == "edgectl_controller_dropped_packets_total"
    }
    assert dropped == {
        "ok": ("op25b", 1),
        'quote"back\\slash': ("quarantine", 5),
        "no_policy": ("other", 3),
        "odd_policy": ("other", 4),
    }
    octets = [
        dict(labels)["counter"]
        for (name, labels), _ in series.items()
        if name == "edgectl_controller_dropped_bytes_total"
    ]
    assert sorted(octets) == ["ok", 'quote"back\\slash']

    # Text the agent's JSON may carry but UTF-8 may not, and a row that is not JSON.
    body = '{"applied_revision": 1, "detail": {"counters": {"\\ud800": {"packets": 1}}}}'
    response = api.call(
        "POST",
        "/v1/gateways/gw-b/status",
        role=world.agent_b,
        content=body.encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "detail"]
    api.get("/v1/gateways/gw-b")
    with api.store.database.write() as connection:
        connection.execute(sa.update(t.gateway_status).values(detail="{not json"))
    series = scrape(api)
    assert series[("edgectl_controller_gateway_converged", gw("gw-a"))] == 1
    assert ("edgectl_controller_gateway_drift_repairs", gw("gw-b")) not in series


@pytest.mark.parametrize("value", [10**30, 1.5, None, {"a": 1}])
def test_odd_numbers_in_detail(api: Api, world: World, value: Any) -> None:
    detail = {"drift_repairs": value, "counters": {"c": {"policy": "op25b", "packets": value}}}
    report(api, world.agent_a, "gw-a", revision(api, "gw-a"), detail=detail)
    series = scrape(api)
    shown = series.get(("edgectl_controller_gateway_drift_repairs", gw("gw-a")))
    assert shown == (float(value) if isinstance(value, int) else None)
    packets = series.get(
        ("edgectl_controller_dropped_packets_total", gw("gw-a", policy="op25b", counter="c"))
    )
    assert packets == shown
