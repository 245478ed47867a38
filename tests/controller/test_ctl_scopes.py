"""Entry scopes: gateways whose entries compile from the same inputs share them,
and a gateway that changes scope is never served a delta across the move."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from ctl_support import Api, World
from test_ctl_desired import hold, state
from test_ctl_migrations import _alembic

from edgectl.controller.store import Store, gateways, sweep
from edgectl.controller.store import schema as t
from edgectl.model import state_from_data
from edgectl.model.delta import patch
from edgectl.model.serial import delta_from_data

GARDEN = {"resolvers": ["192.0.2.53"], "portal": ["192.0.2.80"]}


def _patch(api: Api, path: str, body: Any) -> None:
    api.call("PATCH", path, json=body, expect=200)


def _scope(store: Store, name: str) -> int:
    with store.read() as connection:
        return int(
            connection.execute(
                sa.select(t.gateways.c.scope_id).where(t.gateways.c.name == name)
            ).scalar_one()
        )


def _entry_rows(store: Store, key: str) -> list[Any]:
    e = t.entries
    with store.read() as connection:
        return connection.execute(sa.select(e).where(e.c.key == key)).all()


def _scopes(store: Store) -> int:
    with store.read() as connection:
        return int(
            connection.execute(sa.select(sa.func.count()).select_from(t.entry_scopes)).scalar_one()
        )


def test_gateways_with_the_same_pools_share_one_entry_stream(api: Api, world: World) -> None:
    for name in ("gw-c", "gw-d"):
        api.post("/v1/gateways", {"name": name, "pools": ["dyn_b"]})
    assert _scope(api.store, "gw-b") == _scope(api.store, "gw-c") == _scope(api.store, "gw-d")
    assert _scope(api.store, "gw-a") != _scope(api.store, "gw-b")
    api.put("/v1/accounts/bert/session", {"ipv4": "100.65.0.20"})
    cursors = {name: state(api, name)["revision"] for name in ("gw-b", "gw-c", "gw-d")}
    hold(api, "bert")
    # One compiled entry for the three gateways, and each gateway's revision moved.
    assert [row.live for row in _entry_rows(api.store, "100.65.0.20")] == [True]
    for name, since in cursors.items():
        document = state(api, name, since=since)
        assert document["kind"] == "delta" and document["revision"] > since
        keys = [q["key"] for q in document["delta"]["quarantines"]["upserts"]]
        assert keys == ["100.65.0.20"]
        assert document["delta"]["gateway"] == name
        assert [q["key"] for q in state(api, name)["state"]["quarantines"]] == ["100.65.0.20"]
        # The lag is still measured per gateway, from this revision.
        assert gateways.get_gateway(api.store, name)["convergence"]["lag_seconds"] is not None
    assert state(api, "gw-a")["state"]["quarantines"] == []


def test_a_garden_is_part_of_the_scope(api: Api, world: World) -> None:
    """A walled-garden hold is enforced as such only where there is a garden."""
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    hold(api, "alice", "walled-garden")
    # Its account's gateway gets another without a garden (the API refuses the
    # hold at a gateway without one, not a gateway added later).
    api.post("/v1/gateways", {"name": "gw-plain", "pools": ["dyn_a", "biz"]})
    assert _scope(api.store, "gw-plain") != _scope(api.store, "gw-a")
    modes = {
        name: [q["mode"] for q in state(api, name)["state"]["quarantines"]]
        for name in ("gw-a", "gw-plain")
    }
    assert modes["gw-a"] == ["walled-garden"]
    assert modes["gw-plain"] not in ([], ["walled-garden"])
    # Given a garden, it joins gw-a's scope and is served its entries.
    _patch(api, "/v1/gateways/gw-plain", {"settings": GARDEN})
    assert _scope(api.store, "gw-plain") == _scope(api.store, "gw-a")
    assert [q["mode"] for q in state(api, "gw-plain")["state"]["quarantines"]] == ["walled-garden"]


def test_moving_scope_answers_an_older_cursor_with_a_snapshot(api: Api, world: World) -> None:
    api.post("/v1/gateways", {"name": "gw-c", "pools": ["dyn_b"]})
    api.put("/v1/accounts/alice/session", {"ipv4": "100.64.0.10"})
    api.put("/v1/accounts/bert/session", {"ipv4": "100.65.0.20"})
    hold(api, "alice")
    hold(api, "bert")
    before = state(api, "gw-c")
    assert [q["key"] for q in before["state"]["quarantines"]] == ["100.65.0.20"]
    scopes = _scopes(api.store)
    # gw-c now serves dyn_a alone: a scope no gateway had, made and compiled whole.
    _patch(api, "/v1/gateways/gw-c", {"pools": ["dyn_a"]})
    assert _scopes(api.store) == scopes + 1
    moved = state(api, "gw-c", since=before["revision"])
    assert moved["kind"] == "snapshot"
    assert [q["key"] for q in moved["state"]["quarantines"]] == ["100.64.0.10"]
    # From the new revision on, deltas follow the new scope's history.
    api.put("/v1/accounts/carol/session", {"ipv4": "100.64.0.11"})
    hold(api, "carol")
    delta = state(api, "gw-c", since=moved["revision"])
    assert delta["kind"] == "delta"
    after = patch(state_from_data(moved["state"]), delta_from_data(delta["delta"]))
    assert after == state_from_data(state(api, "gw-c")["state"])
    # Back to dyn_b: it joins gw-b's scope again, the one it left is gone.
    current = state(api, "gw-c")["revision"]
    _patch(api, "/v1/gateways/gw-c", {"pools": ["dyn_b"]})
    assert _scope(api.store, "gw-c") == _scope(api.store, "gw-b")
    assert _scopes(api.store) == scopes
    back = state(api, "gw-c", since=current)
    assert back["kind"] == "snapshot"
    assert [q["key"] for q in back["state"]["quarantines"]] == ["100.65.0.20"]
    assert [row.scope_id for row in _entry_rows(api.store, "100.64.0.11")] == [
        _scope(api.store, "gw-a")
    ]  # the left scope's copy went with it


def test_deleting_the_last_gateway_of_a_scope_deletes_it(api: Api, world: World) -> None:
    api.put("/v1/accounts/bert/session", {"ipv4": "100.65.0.20"})
    hold(api, "bert")
    scopes = _scopes(api.store)
    api.call("DELETE", "/v1/gateways/gw-b", expect=204)
    assert _scopes(api.store) == scopes - 1
    assert _entry_rows(api.store, "100.65.0.20") == []


def _world_revisions(store: Store) -> dict[str, tuple[int, int]]:
    with store.read() as connection:
        rows = connection.execute(
            sa.select(t.gateways.c.name, t.gateways.c.revision, t.gateways.c.horizon)
        ).all()
    return {row.name: (int(row.revision), int(row.horizon)) for row in rows}


_LEGACY = sa.table(
    "gateway_entries",
    sa.column("gateway_id"),
    sa.column("key"),
    sa.column("seq"),
    sa.column("live"),
)


def test_0010_groups_existing_gateways_and_back(api: Api, world: World) -> None:
    """Per-gateway entries become one stream per signature; a gateway of a shared
    scope that was behind its scope's source moves up with its horizon."""
    api.post("/v1/gateways", {"name": "gw-c", "pools": ["dyn_b"]})
    api.put("/v1/accounts/bert/session", {"ipv4": "100.65.0.20"})
    hold(api, "bert")
    _patch(api, "/v1/gateways/gw-b", {"settings": {"resolvers": ["192.0.2.53"]}})  # no garden
    served = {name: state(api, name) for name in ("gw-a", "gw-b", "gw-c")}
    ids = {name: gateways.gateway_id(api.store, name) for name in ("gw-b", "gw-c")}
    _alembic(api.store, command.downgrade, "0009")
    with api.store.database.engine.connect() as connection:
        legacy = connection.execute(sa.select(_LEGACY.c.gateway_id, _LEGACY.c.key)).all()
    assert sorted(legacy) == sorted((ids[name], "100.65.0.20") for name in ("gw-b", "gw-c"))
    before = _world_revisions(api.store)
    assert before["gw-b"][0] > before["gw-c"][0]  # its settings change
    _alembic(api.store, command.upgrade, "head")
    after = _world_revisions(api.store)
    assert _scope(api.store, "gw-b") == _scope(api.store, "gw-c")
    assert after["gw-a"] == before["gw-a"]
    assert after["gw-b"] == after["gw-c"] == (before["gw-b"][0], before["gw-b"][0])
    assert [row.live for row in _entry_rows(api.store, "100.65.0.20")] == [True]
    # gw-c's agent, at its old revision, is answered with a snapshot of what it had.
    document = state(api, "gw-c", since=served["gw-c"]["revision"])
    assert document["kind"] == "snapshot"
    assert document["state"]["quarantines"] == served["gw-c"]["state"]["quarantines"]
    assert state(api, "gw-b", since=served["gw-b"]["revision"])["kind"] == "delta"
    api.put("/v1/accounts/ernie/session", {"ipv4": "100.65.0.21"})
    hold(api, "ernie")  # changes go on being served to both
    for name in ("gw-b", "gw-c"):
        document = state(api, name, since=after[name][0])
        assert document["kind"] == "delta"
        assert len(document["delta"]["quarantines"]["upserts"]) == 1


def _count(store: Store, table: sa.Table) -> int:
    with store.read() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _report(store: Store, name: str) -> int:
    """Report ``name``'s current revision applied; returns it."""
    revision = int(gateways.get_gateway(store, name)["revision"])
    gateways.report_status(store, "agent", name, revision, {"ok": True})
    return revision


def test_a_hold_moves_one_scope_revision_not_one_per_gateway(api: Api, world: World) -> None:
    for n in range(5):
        api.post("/v1/gateways", {"name": f"gw-{n}", "pools": ["dyn_b"]})
    names = ["gw-b", *(f"gw-{n}" for n in range(5))]
    for name in names:
        _report(api.store, name)
    api.put("/v1/accounts/bert/session", {"ipv4": "100.65.0.20"})
    own, scoped = _count(api.store, t.revisions), _count(api.store, t.scope_revisions)
    hold(api, "bert")
    assert _count(api.store, t.revisions) == own
    assert _count(api.store, t.scope_revisions) == scoped + 1
    revisions = {gateways.get_gateway(api.store, name)["revision"] for name in names}
    assert len(revisions) == 1  # every gateway of the scope wants it
    for name in names:
        view = gateways.get_gateway(api.store, name)["convergence"]
        assert not view["converged"] and view["lag_seconds"] is not None
    _report(api.store, "gw-b")
    assert gateways.get_gateway(api.store, "gw-b")["convergence"]["lag_seconds"] is None
    assert gateways.get_gateway(api.store, "gw-0")["convergence"]["lag_seconds"] is not None


def test_the_sweeper_keeps_the_scope_revisions_a_lag_is_measured_from(
    api: Api, world: World
) -> None:
    api.post("/v1/gateways", {"name": "gw-c", "pools": ["dyn_b"]})
    _report(api.store, "gw-b")
    _report(api.store, "gw-c")  # and then never again
    for n in range(3):
        api.put(f"/v1/accounts/bot{n}/session", {"ipv4": f"100.65.0.{n + 1}"})
    seqs = []
    for n in range(3):
        hold(api, f"bot{n}")
        seqs.append(gateways.get_gateway(api.store, "gw-b")["revision"])
    _report(api.store, "gw-b")  # caught up
    lag = gateways.get_gateway(api.store, "gw-c")["convergence"]["lag_seconds"]
    sweep.forget_revisions(api.store, retention=-1)
    with api.store.read() as connection:
        kept = connection.execute(sa.select(t.scope_revisions.c.seq)).scalars().all()
    # The current one, and gw-c's first unapplied one (the scope's first);
    # none of gw-c's own is unapplied.
    assert sorted(kept) == [seqs[0], seqs[2]]
    after = gateways.get_gateway(api.store, "gw-c")["convergence"]["lag_seconds"]
    assert after is not None and lag is not None and after >= lag
