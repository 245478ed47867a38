"""POST /v1/reports: attribution from the session history, de-duplication, cases,
the reporter role, and bad input refused whole; on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctl_support import Api
from feed_support import at, event, v4, v6
from feed_support import world as feed_world

from edgectl.controller.auth import Role
from edgectl.controller.store import audit, tokens
from edgectl.controller.store.feed import apply_events

DATA = Path(__file__).parent.parent / "data" / "reports"


def _history(api: Api) -> None:
    """cust-1 on 100.64.0.7 03:00-03:30, cust-2 on it from 03:40; cust-3 on 100.64.0.9."""
    feed_world(api.store)
    apply_events(
        api.store,
        [
            event("start", 0, "s1", "cust-1", ipv4=v4(7), ipv6=v6(1)),
            event("stop", 30, "s1", "cust-1", ipv4=v4(7), ipv6=v6(1)),
            event("start", 40, "s2", "cust-2", ipv4=v4(7), source="nas2"),
            event("start", 0, "s3", "cust-3", ipv4=v4(9)),
        ],
    )


def _post(api: Api, body: bytes | str, kind: str, role: str = "abuse", **kw: Any) -> Any:
    return api.call(
        "POST", "/v1/reports", role=role, content=body, headers={"Content-Type": kind}, **kw
    )


def _csv(*rows: str) -> str:
    return "address,time,class,message_id\n" + "".join(row + "\n" for row in rows)


def test_arf_is_attributed_to_whoever_held_the_address_then(api: Api) -> None:
    _history(api)
    raw = (DATA / "arf-subscriber.eml").read_bytes()  # 100.64.0.7 at 03:10
    answer = _post(api, raw, "message/rfc822", expect=200).json()
    assert answer["accepted"] == 1 and answer["attributed"] == 1
    [report] = api.get("/v1/reports", role="viewer")
    assert report["account"] == "cust-1"
    assert report["class"] == "spam" and report["format"] == "arf"
    assert report["attribution"]["source"] == "nas1"
    assert report["attribution"]["session_id"] == "s1"
    assert report["source"] == "token:test-abuse"
    # The same message again: a duplicate, nothing new.
    again = _post(api, raw, "message/rfc822", expect=200).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert len(api.get("/v1/reports", role="viewer")) == 1


def test_attribution_follows_the_address_over_time_and_keeps_the_unattributable(
    api: Api,
) -> None:
    _history(api)
    body = _csv(
        f"100.64.0.7,{at(29.999).isoformat()},spam,a",  # cust-1 (end exclusive)
        f"100.64.0.7,{at(30).isoformat()},spam,b",  # nobody between sessions
        f"100.64.0.7,{at(45).isoformat()},spam,c",  # cust-2
        f"100.64.0.9,{at(45).isoformat()},botnet,d",  # cust-3, still open
        f"192.0.2.1,{at(45).isoformat()},spam,e",  # not a subscriber
        f"2001:db8:a000:100::5,{at(10).isoformat()},spam,f",  # inside cust-1's /56
    )
    answer = _post(api, body, "text/csv", expect=200).json()
    assert answer == {**answer, "received": 6, "accepted": 6, "attributed": 4, "unattributed": 2}
    found = {r["message_id"]: r["account"] for r in api.get("/v1/reports", role="viewer")}
    assert found == {
        "a": "cust-1",
        "b": None,
        "c": "cust-2",
        "d": "cust-3",
        "e": None,
        "f": "cust-1",
    }
    unattributed = api.get("/v1/reports?unattributed=true", role="viewer")
    assert sorted(r["message_id"] for r in unattributed) == ["b", "e"]


def test_duplicates_by_message_id_and_by_event(api: Api) -> None:
    _history(api)
    first = _csv(f"100.64.0.7,{at(5).isoformat()},spam,m1")
    assert _post(api, first, "text/csv", expect=200).json()["accepted"] == 1
    # Same source, same message id, another time: the same report relayed again.
    same_id = _csv(f"100.64.0.7,{at(6).isoformat()},spam,m1")
    assert _post(api, same_id, "text/csv", expect=200).json()["duplicates"] == 1
    # Another source (the netops token) with the same id: a different report...
    other = _post(api, same_id, "text/csv", role="netops", expect=200).json()
    assert other["accepted"] == 1
    # ...but the same address, time and class from anyone is one event.
    same_event = _csv(f"100.64.0.7,{at(5).isoformat()},spam,zz")
    assert _post(api, same_event, "text/csv", role="netops", expect=200).json()["duplicates"] == 1
    # Within one batch too.
    twice = _csv(f"100.64.0.9,{at(7).isoformat()},spam,x", f"100.64.0.9,{at(7).isoformat()},spam,y")
    assert _post(api, twice, "text/csv", expect=200).json()["accepted"] == 1


def test_cases_group_per_account_and_class(api: Api) -> None:
    _history(api)
    body = _csv(
        f"100.64.0.7,{at(1).isoformat()},spam,1",
        f"100.64.0.7,{at(2).isoformat()},spam,2",
        f"100.64.0.7,{at(3).isoformat()},botnet,3",
        f"100.64.0.9,{at(3).isoformat()},spam,4",
    )
    _post(api, body, "text/csv", expect=200)
    _post(api, _csv(f"100.64.0.7,{at(4).isoformat()},spam,5"), "text/csv", expect=200)
    cases = {(c["account"], c["class"]): c for c in api.get("/v1/cases", role="viewer")}
    assert set(cases) == {("cust-1", "spam"), ("cust-1", "botnet"), ("cust-3", "spam")}
    spam = cases[("cust-1", "spam")]
    assert spam["reports"] == 3
    assert (spam["first_at"], spam["last_at"]) == (at(1).isoformat(), at(4).isoformat())
    listed = api.get(f"/v1/reports?case={spam['id']}", role="viewer")
    assert [r["message_id"] for r in listed] == ["1", "2", "5"]
    assert api.get(f"/v1/cases/{spam['id']}", role="viewer")["account"] == "cust-1"
    api.get("/v1/cases/999999", role="viewer", expect=404)


def test_xarf_list_and_informational_classes_are_kept(api: Api) -> None:
    _history(api)
    spam = (DATA / "xarf-spam.json").read_text()
    scan = (DATA / "xarf-port-scan.json").read_text()
    answer = _post(api, f"[{spam}, {scan}]", "application/json", expect=200).json()
    assert answer["accepted"] == 2 and answer["attributed"] == 2
    classes = sorted(r["class"] for r in api.get("/v1/reports?account=cust-1", role="viewer"))
    assert classes == ["scan", "spam"]


def test_bad_input_is_422_naming_the_line_and_nothing_is_kept(api: Api) -> None:
    _history(api)
    body = _csv(f"100.64.0.7,{at(1).isoformat()},spam,1", "100.64.0.7,not-a-time,spam,2")
    answer = _post(api, body, "text/csv", expect=422).json()
    assert answer["detail"][0]["field"] == "line 3: time"
    assert api.get("/v1/reports", role="viewer") == []
    bad_json = _post(api, b"[{]", "application/json", expect=422).json()
    assert bad_json["detail"][0]["field"] == "body"
    xarf_bad = _post(api, '[{"xarf_version": "4.0.0"}]', "application/json", expect=422).json()
    assert xarf_bad["detail"][0]["field"] == "[0].report_id"
    _post(api, b"\xff\xfe", "text/csv", expect=422)
    _post(api, b"hello", "text/plain", expect=422)
    _post(api, b"From: x\r\n\r\nhi", "message/rfc822", expect=422)
    _post(api, _csv(), "text/csv?", expect=422)
    # PostgreSQL refuses NUL in text: a 422 naming the field, never a 500.
    nul = _post(api, _csv(f"100.64.0.7,{at(1).isoformat()},spam,a\x00b"), "text/csv", expect=422)
    assert nul.json()["detail"][0]["field"] == "line 2: message_id"
    xarf_nul = (
        '[{"xarf_version": "4.0.0", "report_id": "a\\u0000", "timestamp": "2026-03-01T03:00:00Z",'
    )
    xarf_nul += ' "source_identifier": "100.64.0.7", "category": "messaging", "type": "spam"}]'
    answer = _post(api, xarf_nul, "application/json", expect=422).json()
    assert answer["detail"][0]["field"] == "[0].report_id"
    tomorrow = _csv(
        f"100.64.0.7,{at(1).isoformat()},spam,1", "100.64.0.7,2099-01-01T00:00:00Z,spam,2"
    )
    assert _post(api, tomorrow, "text/csv", expect=422).json()["detail"][0]["field"] == (
        "line 3: time"
    )
    assert api.get("/v1/reports", role="viewer") == []


def test_reporter_role_may_only_post_reports(api: Api) -> None:
    _history(api)
    relay = tokens.create(api.store, "fbl-relay", Role.REPORTER)
    body = _csv(f"100.64.0.7,{at(1).isoformat()},spam,1")
    assert _post(api, body, "text/csv", role=relay, expect=200).json()["accepted"] == 1
    for path in ("/v1/reports", "/v1/cases", "/v1/quarantines", "/v1/offenders", "/v1/audit"):
        api.call("GET", path, role=relay, expect=403)
    api.call(
        "POST",
        "/v1/quarantines",
        role=relay,
        json={"account": "cust-1", "mode": "smtp", "reason": "x"},
        expect=403,
    )
    _post(api, body, "text/csv", role="viewer", expect=403)
    records = audit.listing(api.store, audit.AuditFilter(action="reports.ingest"))
    assert [r["actor"] for r in records] == ["token:fbl-relay"]
    assert records[0]["after"]["accepted"] == 1
