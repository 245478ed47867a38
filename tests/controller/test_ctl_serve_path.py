"""The long-poll serve path's shortcuts keep their promises: cached tokens
stop working the moment they are revoked here (and within poll_interval
when revoked elsewhere), a waiter is woken by the commit itself (not by a
periodic re-check), and agents woken together share one read."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from ctl_support import Api, World, settings_for, wait_until_parked
from fastapi.testclient import TestClient

from edgectl.controller.app import create_app
from edgectl.controller.auth import Role
from edgectl.controller.errors import Invalid, NotFound
from edgectl.controller.notify import Notifier
from edgectl.controller.store import Store, desired, gateways, tokens
from edgectl.controller.store.core import BodyCache
from edgectl.controller.store.tokens import Principal, TokenCache
from edgectl.testing.wait import wait_until


@pytest.fixture
def slow_poll(store: Store) -> Iterator[Api]:
    """An API whose re-check for other processes' changes (and token cache
    lifetime) is 30 s: anything faster than that came from the notifier or
    from an explicit invalidation."""
    app = create_app(settings_for(store, poll_interval=30.0), store, sweep=False)
    with TestClient(app) as client:
        yield Api(client, store)


def desired_state(api: Api, token: str, gateway: str = "gw-a", **params: Any) -> Any:
    return api.client.get(
        f"/v1/gateways/{gateway}/desired-state",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )


def test_revoked_token_is_refused_at_once(slow_poll: Api) -> None:
    api = slow_poll
    token = tokens.create(api.store, "soon-gone", Role.VIEWER)
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/v1/pools", headers=headers).status_code == 200  # now cached
    tokens.revoke(api.store, "soon-gone")
    assert api.client.get("/v1/pools", headers=headers).status_code == 401


def test_rotated_agent_token_is_refused_at_once(slow_poll: Api) -> None:
    world = World(slow_poll)
    assert desired_state(slow_poll, world.agent_a).status_code == 200  # now cached
    new = slow_poll.post("/v1/gateways/gw-a/token", None)["agent_token"]
    assert desired_state(slow_poll, world.agent_a).status_code == 401
    assert desired_state(slow_poll, new).status_code == 200


def test_deleted_gateways_token_is_refused_at_once(slow_poll: Api) -> None:
    world = World(slow_poll)
    assert desired_state(slow_poll, world.agent_b, "gw-b").status_code == 200
    slow_poll.call("DELETE", "/v1/gateways/gw-b", expect=204)
    assert desired_state(slow_poll, world.agent_b, "gw-b").status_code == 401


def test_parked_long_poll_ends_when_its_token_is_rotated(slow_poll: Api) -> None:
    world = World(slow_poll)
    revision = desired_state(slow_poll, world.agent_a).json()["revision"]
    slow_poll.post("/v1/gateways/gw-a/token", None)
    # Already authenticated requests re-check after waiting: no answer for a dead token.
    response = desired_state(slow_poll, world.agent_a, since=revision, wait=0.2)
    assert response.status_code == 401


def test_token_revoked_by_another_process_stops_within_poll_interval(store: Store) -> None:
    app = create_app(settings_for(store, poll_interval=0.5), store, sweep=False)
    with TestClient(app) as client:
        token = tokens.create(store, "elsewhere", Role.VIEWER)
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/pools", headers=headers).status_code == 200
        other = Store.open(store.database.url, migrate=False)  # no listener: no invalidation
        try:
            tokens.revoke(other, "elsewhere")
        finally:
            other.close()
        wait_until(
            lambda: client.get("/v1/pools", headers=headers).status_code != 200,
            timeout=0.5 + 0.5,
            what="cached beyond poll_interval",
        )


def test_waiter_is_woken_by_the_notifier_not_the_poll(slow_poll: Api) -> None:
    world = World(slow_poll)
    slow_poll.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    revision = desired_state(slow_poll, world.agent_a).json()["revision"]
    result: dict[str, Any] = {}

    def poll() -> None:
        result["response"] = desired_state(slow_poll, world.agent_a, since=revision, wait=20)

    waiter = threading.Thread(target=poll)
    waiter.start()
    wait_until_parked(slow_poll)
    body = {"account": "alice", "mode": "smtp", "reason": "r"}
    slow_poll.post("/v1/quarantines", body, role="abuse")
    committed = time.monotonic()
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    assert time.monotonic() - committed < 2  # the re-check would take 30 s
    document = result["response"].json()
    assert document["kind"] == "delta"
    assert [q["key"] for q in document["delta"]["quarantines"]["upserts"]] == ["100.64.0.10"]


def test_agent_asking_again_right_after_a_change_parks_then_wakes(slow_poll: Api) -> None:
    """The "nothing new" check from memory must not miss a commit made
    between an answer and the agent's next request."""
    world = World(slow_poll)
    slow_poll.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    slow_poll.put("/v1/accounts/bob/session", {"ipv4": "100.64.0.11"})
    revision = desired_state(slow_poll, world.agent_a).json()["revision"]
    slow_poll.post(
        "/v1/quarantines", {"account": "alice", "mode": "smtp", "reason": "r"}, role="abuse"
    )
    started = time.monotonic()
    document = desired_state(slow_poll, world.agent_a, since=revision, wait=20).json()
    assert time.monotonic() - started < 2
    assert document["delta"]["to_revision"] > revision
    follow = document["revision"]
    slow_poll.post(
        "/v1/quarantines", {"account": "bob", "mode": "smtp", "reason": "r"}, role="abuse"
    )
    document = desired_state(slow_poll, world.agent_a, since=follow, wait=20).json()
    assert time.monotonic() - started < 4
    assert [q["key"] for q in document["delta"]["quarantines"]["upserts"]] == ["100.64.0.11"]


def test_waiters_woken_together_share_one_read(
    slow_poll: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(slow_poll)
    slow_poll.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    revision = desired_state(slow_poll, world.agent_a).json()["revision"]
    calls: list[int] = []
    real = desired.serve_many

    def counting(store: Store, wanted: Any) -> Any:
        calls.append(len(wanted))
        return real(store, wanted)

    monkeypatch.setattr(desired, "serve_many", counting)
    bodies: list[bytes] = []

    def poll() -> None:
        bodies.append(desired_state(slow_poll, world.agent_a, since=revision, wait=20).content)

    waiters = [threading.Thread(target=poll) for _ in range(4)]
    for waiter in waiters:
        waiter.start()
    notifier = slow_poll.client.app.state.notifier  # type: ignore[attr-defined]
    wait_until(lambda: notifier.parked() >= 4, timeout=10, what="4 waiters", interval=0.01)
    slow_poll.post(
        "/v1/quarantines", {"account": "alice", "mode": "smtp", "reason": "r"}, role="abuse"
    )
    for waiter in waiters:
        waiter.join(timeout=20)
    assert len(bodies) == 4 and len(set(bodies)) == 1
    assert calls == [4]


def test_served_bodies_are_the_uncached_ones(api: Api, world: World) -> None:
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    gateway = gateways.gateway_id(api.store, "gw-a")
    before = desired.serve(api.store, gateway, None).revision
    api.post("/v1/quarantines", {"account": "alice", "mode": "smtp", "reason": "r"}, role="abuse")
    now = desired.serve(api.store, gateway, None).revision
    for since in (before, now):
        with api.store.read() as connection:
            row = connection.execute(desired._ROW.where(desired.t.gateways.c.id == gateway)).one()
            e = desired.t.entries
            # The one gateway's entries, read on their own (not the batch's query).
            entries = connection.execute(
                sa.select(e.c.kind, e.c.key, e.c.payload, e.c.live, e.c.seq)
                .where(e.c.scope_id == row.scope_id, e.c.seq > since, e.c.seq <= row.revision)
                .order_by(e.c.seq, e.c.key)
            ).all()
            fresh = desired._delta(row, since, entries)
        assert desired.serve(api.store, gateway, since).body == fresh  # computed or empty
        assert desired.serve(api.store, gateway, since).body == fresh  # from the cache
        assert desired.serve_many(api.store, [(gateway, since, None)])[0] == desired.serve(
            api.store, gateway, since
        )


def test_token_cache_drops_a_lookup_that_raced_a_revocation() -> None:
    clock = [0.0]
    cache = TokenCache(1.0, clock=lambda: clock[0])
    who = Principal("token:x", Role.VIEWER)
    ticket = cache.begin()  # the database read starts ...
    cache.clear()  # ... a revocation commits ...
    cache.put("digest", who, ticket)  # ... and the (maybe stale) answer arrives
    assert cache.get("digest") is None
    cache.put("digest", who, cache.begin())
    assert cache.get("digest") == who
    clock[0] = 1.0
    assert cache.get("digest") is None  # older than ttl


def test_notifier_ignores_a_read_older_than_a_local_commit() -> None:
    async def scenario() -> None:
        notifier = Notifier()
        notifier.bind(asyncio.get_running_loop())
        clock = [100.0]
        notifier._now = lambda: clock[0]  # type: ignore[method-assign]
        began = notifier.began()
        clock[0] += 0.01
        notifier._wake([7])  # a commit lands while the read is in flight
        notifier.saw(7, 41, began)  # the read's (older) answer
        assert notifier.known(7, 60.0) is None
        clock[0] += 0.01
        notifier.saw(7, 42, notifier.began())
        assert notifier.known(7, 60.0) == 42

    asyncio.run(scenario())


def _statements(store: Store, run: Any) -> tuple[Any, int]:
    """``run()``'s result and how many SQL statements it sent (BEGIN included);
    not the app's background re-check, which runs in threads of its own."""
    sent: list[str] = []
    caller = threading.get_ident()

    def count(*_: Any) -> None:
        if threading.get_ident() == caller:
            sent.append("x")

    sa.event.listen(store.database.engine, "before_cursor_execute", count)
    try:
        result = run()
    finally:
        sa.event.remove(store.database.engine, "before_cursor_execute", count)
    return result, len(sent)


def test_a_batch_costs_the_same_statements_for_4_or_40_gateways(api: Api, world: World) -> None:
    """The fan-out of one change: every waiting gateway's delta from one read."""
    names = [f"gw-{i}" for i in range(40)]
    for name in names:
        api.post("/v1/gateways", {"name": name, "pools": ["dyn_a"]})
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    ids = [gateways.gateway_id(api.store, name) for name in names]
    before = {g: desired.serve(api.store, g, None) for g in ids}
    api.post("/v1/quarantines", {"account": "alice", "mode": "smtp", "reason": "r"}, role="abuse")
    costs = []
    for size in (4, 40):
        api.store.bodies = BodyCache()  # nothing served from memory
        wanted = [(g, before[g].revision, before[g].epoch) for g in ids[:size]]
        answers, statements = _statements(
            api.store, lambda w=wanted: desired.serve_many(api.store, w)
        )
        costs.append(statements)
        for (gateway, since, _), answer in zip(wanted, answers, strict=True):
            assert isinstance(answer, desired.Served) and answer.kind == "delta"
            assert '"key":"100.64.0.10"' in answer.body
            api.store.bodies = BodyCache()
            assert answer == desired.serve(api.store, gateway, since, before[gateway].epoch)
    assert costs[0] == costs[1] <= 4  # BEGIN, the gateway rows, the changed entries (+ commit)


def test_status_reports_of_a_batch_cost_the_same_statements_for_4_or_40(
    api: Api, world: World
) -> None:
    """Every agent reports every change: reports committed together, each answered."""
    names = [f"gw-{i}" for i in range(40)]
    for name in names:
        api.post("/v1/gateways", {"name": name, "pools": ["dyn_a"]})
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    api.post("/v1/quarantines", {"account": "alice", "mode": "smtp", "reason": "r"}, role="abuse")
    revision = api.get("/v1/gateways/gw-0")["revision"]
    costs = []
    for size in (4, 40):
        reports = [gateways.Report(name, revision, {"n": size}) for name in names[:size]]
        answers, statements = _statements(
            api.store, lambda r=reports: gateways.report_many(api.store, "agents", r)
        )
        costs.append(statements)
        assert [a["status"]["detail"] for a in answers] == [{"n": size}] * size  # type: ignore[index]
        assert all(a["converged"] for a in answers)  # type: ignore[index]
    assert costs[0] == costs[1]


def test_a_refused_report_in_a_batch_refuses_only_itself(api: Api, world: World) -> None:
    revision = api.get("/v1/gateways/gw-a")["revision"]
    answers = gateways.report_many(
        api.store,
        "agents",
        [
            gateways.Report("gw-a", revision + 1000, {}),
            gateways.Report("gw-b", api.get("/v1/gateways/gw-b")["revision"], {"ok": 1}),
            gateways.Report("gw-gone", 1, {}),
        ],
    )
    assert isinstance(answers[0], Invalid) and answers[0].path == "applied_revision"
    assert isinstance(answers[1], dict) and answers[1]["status"]["detail"] == {"ok": 1}
    assert isinstance(answers[2], NotFound)
    assert api.get("/v1/gateways/gw-a")["status"] is None  # nothing of the refused one
