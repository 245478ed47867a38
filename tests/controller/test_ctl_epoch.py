"""The store epoch in the agents' cursor: a restored or replaced database is
answered with a snapshot, never with a delta against a history the agent
did not see."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from ctl_support import Api, World, settings_for, wait_until_parked
from fastapi.testclient import TestClient

from edgectl.controller.app import create_app
from edgectl.controller.cli import _new_epoch
from edgectl.controller.store import Store
from edgectl.controller.store import epoch as store_epoch


def state(api: Api, token: str, **params: Any) -> Any:
    return api.get("/v1/gateways/gw-a/desired-state", params=params, role=token)


def hold(api: Api, account: str) -> None:
    body = {"account": account, "mode": "smtp", "reason": "spam", "ticket": "AB-1"}
    api.post("/v1/quarantines", body, role="abuse")


def keys(document: Any) -> set[str]:
    return {q["key"] for q in document["state"]["quarantines"]}


def test_every_answer_names_the_epoch_and_a_cursor_of_it_gets_deltas(
    api: Api, world: World
) -> None:
    first = state(api, world.agent_a)
    epoch = first["epoch"]
    assert isinstance(epoch, str) and len(epoch) == 16
    assert epoch == store_epoch.read(api.store)
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    hold(api, "alice")
    delta = state(api, world.agent_a, since=first["revision"], epoch=epoch)
    assert delta["kind"] == "delta" and delta["epoch"] == epoch
    # An agent that predates epochs (no epoch sent) is served as before.
    legacy = state(api, world.agent_a, since=first["revision"])
    assert legacy["kind"] == "delta"


def test_a_cursor_of_another_epoch_gets_a_snapshot(api: Api, world: World) -> None:
    first = state(api, world.agent_a)
    other = "0123456789abcdef"
    assert other != first["epoch"]
    answer = state(api, world.agent_a, since=first["revision"], epoch=other, wait=5)
    # Not parked, not a delta: the revision may belong to another history.
    assert answer["kind"] == "snapshot"
    assert answer["epoch"] == first["epoch"]


def test_a_malformed_epoch_is_refused_naming_it(api: Api, world: World) -> None:
    response = api.call(
        "GET",
        "/v1/gateways/gw-a/desired-state",
        role=world.agent_a,
        params={"since": 1, "epoch": "not hex!"},
        expect=422,
    )
    assert response.json()["detail"][0]["loc"] == ["query", "epoch"]


def test_a_cursor_ahead_replaces_the_epoch_once_and_is_audited(api: Api, world: World) -> None:
    first = state(api, world.agent_a)
    epoch = first["epoch"]
    ahead = first["revision"] + 50
    answer = state(api, world.agent_a, since=ahead, epoch=epoch)
    assert answer["kind"] == "snapshot"
    new = answer["epoch"]
    assert new != epoch and new == store_epoch.read(api.store)
    # A second agent from the lost history: same old epoch, also ahead -> a
    # snapshot in the new epoch, and no second replacement.
    again = state(api, world.agent_a, since=ahead, epoch=epoch)
    assert again["kind"] == "snapshot" and again["epoch"] == new
    # A cursor of the old epoch that is *behind* (the store counted past it
    # meanwhile) is not trusted either.
    behind = state(api, world.agent_a, since=first["revision"], epoch=epoch)
    assert behind["kind"] == "snapshot"
    trail = api.get("/v1/audit", params={"action": "store.epoch"})
    records = trail["items"] if isinstance(trail, dict) else trail
    assert len(records) == 1
    assert records[0]["actor"] == "controller:restore-detected"


def test_a_replaced_epoch_wakes_parked_long_polls(api: Api, world: World) -> None:
    first = state(api, world.agent_a)
    answers: list[Any] = []

    def poll() -> None:
        answers.append(
            state(api, world.agent_a, since=first["revision"], epoch=first["epoch"], wait=20)
        )

    waiter = threading.Thread(target=poll)
    waiter.start()
    wait_until_parked(api)
    # Another process (or the CLI) replaces the epoch: the re-check notices.
    store_epoch.rotate(api.store, "cli:new-epoch", "test")
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert answers[0]["kind"] == "snapshot" and answers[0]["epoch"] != first["epoch"]


def test_new_epoch_command_replaces_it(api: Api, world: World) -> None:
    before = store_epoch.read(api.store)
    assert _new_epoch(settings_for(api.store)) == 0
    after = store_epoch.read(api.store)
    assert after is not None and after != before


def _backup(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)
    target.chmod(0o600)


def _lost_history(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str], Any]:
    """A backup, then a change an agent applied that the backup lacks: the
    backup's path, the tokens, gateway agent tokens, and the agent's answer."""
    live = tmp_path / "live.db"
    store = Store.open(f"sqlite:///{live}")
    with TestClient(create_app(settings_for(store), store, sweep=False)) as client:
        api = Api(client, store)
        world = World(api)
        api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
        api.put("/v1/accounts/bob/session", {"ipv4": "100.64.0.11"})
        _backup(live, tmp_path / "backup.db")
        hold(api, "alice")  # lost with the restore
        agent = state(api, world.agent_a)
        assert keys(agent) == {"100.64.0.10"}
        roles = api.tokens
    store.close()
    return tmp_path / "backup.db", roles, {"gw-a": world.agent_a}, agent


def _restored_api(client: TestClient, store: Store, roles: dict[str, str]) -> Api:
    api = Api.__new__(Api)  # the backup holds the tokens made before it
    api.client, api.store, api.tokens = client, store, roles
    return api


def _count_past(api: Api, revision: int) -> None:
    """Writes on the restored store until gw-a's revision is past ``revision``."""
    while api.get("/v1/gateways/gw-a")["revision"] <= revision:
        hold(api, "bob")
        (held,) = api.get("/v1/quarantines", params={"state": "active"})
        api.post(f"/v1/quarantines/{held['id']}/lift", {"reason": "r"}, role="abuse")
    hold(api, "bob")


def test_an_agent_back_before_the_restored_store_counts_past_it_triggers_a_new_epoch(
    tmp_path: Path,
) -> None:
    backup, roles, agents, agent = _lost_history(tmp_path)
    store = Store.open(f"sqlite:///{backup}")
    with TestClient(create_app(settings_for(store), store, sweep=False)) as client:
        api = _restored_api(client, store, roles)
        first = state(api, agents["gw-a"], since=agent["revision"], epoch=agent["epoch"])
        assert first["kind"] == "snapshot" and keys(first) == set()  # alice's hold is gone
        assert first["epoch"] != agent["epoch"]
        # Later writes count past the lost revision: an agent of the lost
        # history coming back only now still gets a snapshot (other epoch).
        _count_past(api, agent["revision"])
        late = state(api, agents["gw-a"], since=agent["revision"], epoch=agent["epoch"])
        assert late["kind"] == "snapshot" and keys(late) == {"100.64.0.11"}
    store.close()


def test_after_new_epoch_a_restored_store_that_counted_past_the_agent_sends_a_snapshot(
    tmp_path: Path,
) -> None:
    """The order detection cannot see (the store counted past every lost
    cursor before any agent came back) is why the restore procedure runs
    ``edgectl controller new-epoch``."""
    backup, roles, agents, agent = _lost_history(tmp_path)
    store = Store.open(f"sqlite:///{backup}")
    assert _new_epoch(settings_for(store)) == 0
    with TestClient(create_app(settings_for(store), store, sweep=False)) as client:
        api = _restored_api(client, store, roles)
        _count_past(api, agent["revision"])
        answer = state(api, agents["gw-a"], since=agent["revision"], epoch=agent["epoch"])
        assert answer["kind"] == "snapshot"
        assert keys(answer) == {"100.64.0.11"}  # alice's lost hold does not survive
    store.close()


@pytest.mark.parametrize("epoch", [None, "00ff"])
def test_served_body_is_the_envelope_agents_parse(api: Api, world: World, epoch: Any) -> None:
    from edgectl.agent.daemon.protocol import parse_answer  # the agent's own reader

    first = state(api, world.agent_a)
    answer = parse_answer(first)
    assert answer.epoch == first["epoch"] and answer.revision == first["revision"]
    params = {"since": first["revision"]} | ({} if epoch is None else {"epoch": epoch})
    assert parse_answer(state(api, world.agent_a, **params)).epoch == first["epoch"]
