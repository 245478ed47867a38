"""PostgreSQL LISTEN/NOTIFY: a commit in another controller process wakes the
long-polls parked here at once, not at the next periodic re-check."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from ctl_support import Api, World, settings_for, wait_until_parked
from fastapi.testclient import TestClient

from edgectl.controller.app import create_app
from edgectl.controller.store import Store, holds
from edgectl.controller.store import epoch as store_epoch
from edgectl.controller.store.db import CHANGES_CHANNEL
from edgectl.model import QuarantineMode
from edgectl.testing.wait import wait_until

# LISTEN/NOTIFY is PostgreSQL's: these run on the real server only (SQLite
# has one controller process; see the last test for what it does there).
pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture
def slow_recheck(store: Store) -> Iterator[Api]:
    """The re-check every 60 s: a wake-up within seconds came from a notification."""
    app = create_app(settings_for(store, poll_interval=60.0), store, sweep=False)
    with TestClient(app) as client:
        yield Api(client, store)


def _listening(store: Store) -> int:
    with store.database.engine.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE query = :q"),
                {"q": f"LISTEN {CHANGES_CHANNEL}"},
            ).scalar_one()
        )


def _parked_poll(
    api: Api, token: str, since: int, epoch: str
) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []

    def poll() -> None:
        params = {"since": since, "epoch": epoch, "wait": 30}
        answers.append(api.get("/v1/gateways/gw-a/desired-state", params=params, role=token))

    waiter = threading.Thread(target=poll)
    waiter.start()
    wait_until_parked(api)
    return waiter, answers


def _hold_elsewhere(url: str, account: str) -> None:
    other = Store.open(url, migrate=False)  # another controller process's store
    try:
        spec = holds.QuarantineSpec(mode=QuarantineMode.SMTP, reason="r", account=account)
        holds.quarantine(other, "token:elsewhere", spec)
    finally:
        other.close()


def test_a_commit_in_another_process_wakes_a_parked_long_poll(slow_recheck: Api) -> None:
    api = slow_recheck
    world = World(api)
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    first = api.get("/v1/gateways/gw-a/desired-state", role=world.agent_a)
    wait_until(lambda: _listening(api.store) >= 1, 10, what="never listened")
    waiter, answers = _parked_poll(api, world.agent_a, first["revision"], first["epoch"])
    started = time.monotonic()
    _hold_elsewhere(api.store.database.url, "alice")
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 5  # the re-check would take up to 60 s
    assert answers[0]["kind"] == "delta"
    assert answers[0]["delta"]["quarantines"]["upserts"][0]["key"] == "100.64.0.10"


def test_a_new_epoch_from_another_process_wakes_every_long_poll(slow_recheck: Api) -> None:
    api = slow_recheck
    world = World(api)
    first = api.get("/v1/gateways/gw-a/desired-state", role=world.agent_a)
    wait_until(lambda: _listening(api.store) >= 1, 10, what="never listened")
    waiter, answers = _parked_poll(api, world.agent_a, first["revision"], first["epoch"])
    other = Store.open(api.store.database.url, migrate=False)
    try:
        store_epoch.rotate(other, "cli:new-epoch", "test")
    finally:
        other.close()
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    assert answers[0]["kind"] == "snapshot" and answers[0]["epoch"] != first["epoch"]


def test_a_broken_listen_connection_comes_back(slow_recheck: Api) -> None:
    api = slow_recheck
    world = World(api)
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    wait_until(lambda: _listening(api.store) >= 1, 10, what="never listened")
    with api.store.database.engine.connect() as connection:
        connection.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = :q"),
            {"q": f"LISTEN {CHANGES_CHANNEL}"},
        )
        connection.commit()
    # Reconnected (it retries every second) ...
    wait_until(lambda: _listening(api.store) >= 1, 10, what="never listened again")
    first = api.get("/v1/gateways/gw-a/desired-state", role=world.agent_a)
    waiter, answers = _parked_poll(api, world.agent_a, first["revision"], first["epoch"])
    _hold_elsewhere(api.store.database.url, "alice")
    waiter.join(timeout=20)
    # ... and notifications arrive again, long before the 60 s re-check.
    assert not waiter.is_alive()
    assert answers[0]["kind"] == "delta"


def test_own_notifications_are_skipped_and_others_parsed(store: Store) -> None:
    seen: list[frozenset[int] | None] = []
    stop = threading.Event()
    follower = threading.Thread(target=store.follow, args=(seen.append, stop))
    follower.start()
    try:
        wait_until(lambda: seen == [None], 10, what="no connect signal")
        with store.database.write() as connection:
            store.database.notify(connection, f"{store.origin}:1,2")  # our own
            store.database.notify(connection, "someone:3,4")
            store.database.notify(connection, "someone:*")
            store.database.notify(connection, "someone:x")  # unreadable: everyone
        wait_until(lambda: len(seen) >= 4, 10, what="notifications not delivered")
        assert seen == [None, frozenset({3, 4}), None, None]
    finally:
        stop.set()
        follower.join(10)
    assert not follower.is_alive()


def test_metrics_show_parked_long_polls_and_the_listener(slow_recheck: Api) -> None:
    api = slow_recheck
    world = World(api)
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    first = api.get("/v1/gateways/gw-a/desired-state", role=world.agent_a)
    wait_until(lambda: _listening(api.store) >= 1, 10, what="never listened")
    waiter, _ = _parked_poll(api, world.agent_a, first["revision"], first["epoch"])
    text = api.call("GET", "/metrics", role="viewer", expect=200).text
    assert "edgectl_controller_long_polls_parked 1\n" in text
    assert "edgectl_controller_change_listener_up 1\n" in text
    _hold_elsewhere(api.store.database.url, "alice")
    waiter.join(timeout=20)
    assert not waiter.is_alive()
