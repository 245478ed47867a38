"""The controller client: answers parsed into model types, every failure one ControllerError."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import httpx
import pytest

from edgectl.agent.daemon.client import ControllerClient
from edgectl.agent.daemon.protocol import ControllerError, Delta, Snapshot
from edgectl.model import DesiredState
from edgectl.model.delta import diff
from edgectl.model.serial import delta_to_data, state_to_data


def client_for(handler: httpx.MockTransport, token: str = "edg_t") -> ControllerClient:
    return ControllerClient(
        "http://controller.test", "gw-tokyo-1", lambda: token, transport=handler
    )


def test_snapshot_and_delta(policy_state: DesiredState) -> None:
    later = replace(policy_state, revision=8, relays=())
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "since" not in request.url.params:
            body = {"kind": "snapshot", "revision": 7, "state": state_to_data(policy_state)}
        else:
            delta = delta_to_data(diff(policy_state, later))
            body = {"kind": "delta", "revision": 8, "delta": delta}
        return httpx.Response(200, json=body)

    client = client_for(httpx.MockTransport(handle))
    snapshot = client.desired(None, 30)
    assert isinstance(snapshot, Snapshot) and snapshot.state == policy_state
    delta = client.desired(7, 30)
    assert isinstance(delta, Delta) and delta.delta.to_revision == 8
    assert seen[0].url.path == "/v1/gateways/gw-tokyo-1/desired-state"
    assert seen[1].url.params["since"] == "7" and seen[1].url.params["wait"] == "30"
    assert seen[0].headers["Authorization"] == "Bearer edg_t"


def test_report(policy_state: DesiredState) -> None:
    bodies: list[object] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={})

    client_for(httpx.MockTransport(handle)).report(7, {"drift_repairs": 0})
    assert bodies == [{"applied_revision": 7, "detail": {"drift_repairs": 0}}]


OFFENDERS = {
    "available": True,
    "reason": None,
    "window_seconds": 900,
    "entries": [
        {
            "key": "100.64.1.7/32",
            "kind": "ratelimit",
            "policy": "residential",
            "shadow": False,
            "count": 3,
            "first_seen": "2026-11-29T12:00:00.000+00:00",
            "last_seen": "2026-11-29T12:00:05.000+00:00",
        }
    ],
}


def test_report_with_offenders_is_one_body() -> None:
    bodies: list[object] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={})

    assert client_for(httpx.MockTransport(handle)).report(7, {"error": None}, OFFENDERS)
    assert bodies == [{"applied_revision": 7, "detail": {"error": None}, "offenders": OFFENDERS}]


# What FastAPI answers for a field its extra="forbid" model does not have
# (an older controller's StatusReport), word for word.
UNKNOWN_OFFENDERS = {
    "detail": [
        {
            "type": "extra_forbidden",
            "loc": ["body", "offenders"],
            "msg": "Extra inputs are not permitted",
            "input": OFFENDERS,
        }
    ]
}
# What this controller answers for an offenders section it refuses.
BAD_ENTRY = {
    "detail": [
        {
            "type": "value_error",
            "loc": ["body", "offenders", "entries", 0, "first_seen"],
            "msg": "is after last_seen",
            "field": "offenders.entries[0].first_seen",
        }
    ]
}


def test_an_older_controller_gets_the_report_without_offenders(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bodies: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "offenders" in body:
            return httpx.Response(422, json=UNKNOWN_OFFENDERS)
        return httpx.Response(200, json={})

    assert not client_for(httpx.MockTransport(handle)).report(7, {}, OFFENDERS)
    assert [sorted(body) for body in bodies] == [
        ["applied_revision", "detail", "offenders"],
        ["applied_revision", "detail"],
    ]
    assert caplog.records == []  # the loop says it once, when it starts or stops happening


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (BAD_ENTRY, "offenders.entries.0.first_seen: is after last_seen"),
        # extra_forbidden, but not the offenders field itself: this controller knows it.
        (
            {"detail": [{"type": "extra_forbidden", "loc": ["body", "offenders", "colour"]}]},
            "offenders.colour: extra_forbidden",
        ),
    ],
)
def test_a_refused_offenders_section_is_logged_and_the_rest_still_reported(
    caplog: pytest.LogCaptureFixture, answer: dict[str, object], shown: str
) -> None:
    bodies: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        return httpx.Response(422, json=answer) if "offenders" in body else httpx.Response(200)

    assert not client_for(httpx.MockTransport(handle)).report(7, {}, OFFENDERS)
    assert ["offenders" in body for body in bodies] == [True, False]
    (record,) = caplog.records
    assert record.levelname == "ERROR" and shown in record.getMessage()
    assert "older" not in record.getMessage()


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ({"detail": "applied_revision: 9 is ahead of revision 8"}, "9 is ahead of revision 8"),
        ("not json at all", "HTTP 422: not json at all"),
    ],
)
def test_any_other_422_is_raised_and_its_detail_logged(
    caplog: pytest.LogCaptureFixture, answer: object, shown: str
) -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if isinstance(answer, str):
            return httpx.Response(422, text=answer)
        return httpx.Response(422, json=answer)

    client = client_for(httpx.MockTransport(handle))
    with pytest.raises(ControllerError, match="HTTP 422") as caught:
        client.report(7, {}, OFFENDERS)
    assert caught.value.status == 422
    assert len(calls) == 1  # not about offenders: sending it again would not help
    (record,) = caplog.records
    assert record.levelname == "ERROR" and shown in record.getMessage()


def test_a_refusal_is_logged_once_until_it_changes_or_goes_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = [BAD_ENTRY, BAD_ENTRY, {"detail": "applied_revision: 9 is ahead"}, BAD_ENTRY]
    refusals += [None, BAD_ENTRY]  # None: the whole report is taken; then the refusal is back

    def handle(request: httpx.Request) -> httpx.Response:
        if "offenders" not in json.loads(request.content):
            return httpx.Response(200)  # the fall-back without offenders
        answer = refusals.pop(0)
        return httpx.Response(200) if answer is None else httpx.Response(422, json=answer)

    client = client_for(httpx.MockTransport(handle))
    while refusals:
        with contextlib.suppress(ControllerError):
            client.report(7, {}, OFFENDERS)
    assert [("after last_seen" in r.getMessage()) for r in caplog.records] == [True, False, True]


def test_other_report_failures_are_not_retried() -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, text="busy")

    with pytest.raises(ControllerError, match="HTTP 503"):
        client_for(httpx.MockTransport(handle)).report(7, {}, OFFENDERS)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (httpx.Response(401, json={"detail": "invalid token"}), "HTTP 401"),
        (httpx.Response(503, text="busy"), "HTTP 503"),
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json={"kind": "patch", "revision": 1}), "unknown kind"),
        (httpx.Response(200, json={"kind": "snapshot"}), "integer revision"),
        (
            httpx.Response(200, json={"kind": "snapshot", "revision": 1, "state": {"schema": 99}}),
            "unusable snapshot",
        ),
    ],
)
def test_failures_are_controller_errors(response: httpx.Response, words: str) -> None:
    client = client_for(httpx.MockTransport(lambda _: response))
    with pytest.raises(ControllerError) as caught:
        client.desired(None, 1)
    assert words in str(caught.value)


def test_connection_refused_is_a_controller_error() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    with pytest.raises(ControllerError, match="ConnectError"):
        client_for(httpx.MockTransport(handle)).desired(3, 1)


def test_revision_must_match_the_state(policy_state: DesiredState) -> None:
    body = {"kind": "snapshot", "revision": 99, "state": state_to_data(policy_state)}
    client = client_for(httpx.MockTransport(lambda _: httpx.Response(200, json=body)))
    with pytest.raises(ControllerError, match="holds 7"):
        client.desired(None, 1)
