"""The feed inside the app: started and stopped by its lifespan, shown on /metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctl_support import Api, settings_for
from fastapi.testclient import TestClient
from radius_support import SECRET, FakeFeed, Nas, clients_file

from edgectl.controller.app import create_app
from edgectl.controller.radius import codec
from edgectl.controller.radius import config as radius_config
from edgectl.controller.radius.server import Feed, RadiusServer, bind
from edgectl.controller.store import Store
from edgectl.testing.wait import wait_until


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path}/controller.db")
    yield store
    store.close()


def test_lifespan_runs_the_feed_and_metrics_show_it(tmp_path: Path, sqlite_store: Store) -> None:
    path = clients_file(tmp_path, ("bng-1", "127.0.0.1", SECRET))
    parsed = radius_config.parse({"listen": "127.0.0.1:1813", "clients": str(path)})
    assert parsed is not None
    settings = dataclasses.replace(parsed, listen=(("127.0.0.1", 0),))
    fake = FakeFeed()
    feed = Feed(fake.apply, open_sessions=lambda: {"bng-1": 3, 'odd"name': 1})
    radius = RadiusServer(settings, feed, bind(settings.listen))
    app = create_app(settings_for(sqlite_store), sqlite_store, sweep=False, radius=radius)
    nas = Nas(radius.addresses[0], codec.dictionary())
    try:
        with TestClient(app) as client:
            api = Api(client, sqlite_store)
            data = nas.packet(1, Acct_Status_Type="Start", Acct_Session_Id="s", User_Name="cust-1")
            nas.send(data)
            assert nas.answer(5) is not None
            nas.send(b"\x04\x01\x00")
            assert wait_until(lambda: radius.view().dropped.get("malformed") == 1, 5.0, 0.005)
            text = api.call("GET", "/metrics", role="viewer", expect=200).text
        lines = set(text.splitlines())
        assert 'edgectl_controller_radius_packets_total{type="start",outcome="applied"} 1' in lines
        assert 'edgectl_controller_radius_dropped_total{reason="malformed"} 1' in lines
        assert 'edgectl_controller_radius_commit_seconds_bucket{le="+Inf"} 1' in lines
        assert "edgectl_controller_radius_commit_seconds_count 1" in lines
        assert "# TYPE edgectl_controller_radius_commit_seconds histogram" in lines
        assert 'edgectl_controller_radius_open_sessions{nas="bng-1"} 3' in lines
        assert 'edgectl_controller_radius_open_sessions{nas="odd\\"name"} 1' in lines
        assert "edgectl_controller_radius_worker_restarts_total 0" in lines
        # The lifespan's end stopped the feed: nothing answers any more.
        nas.send(nas.packet(2, Acct_Status_Type="Start", Acct_Session_Id="t", User_Name="b"))
        assert nas.answer(0.3) is None
    finally:
        nas.close()


def test_metrics_without_the_feed_have_no_radius_families(api: Api) -> None:
    text = api.call("GET", "/metrics", role="viewer", expect=200).text
    assert "edgectl_controller_radius" not in text


def test_an_acct_start_binds_through_the_real_store(tmp_path: Path, sqlite_store: Store) -> None:
    from edgectl.controller.radius.wiring import feed_of

    path = clients_file(tmp_path, ("bng-1", "127.0.0.1", SECRET))
    parsed = radius_config.parse({"listen": "127.0.0.1:1813", "clients": str(path)})
    assert parsed is not None
    settings = dataclasses.replace(parsed, listen=(("127.0.0.1", 0),))
    radius = RadiusServer(settings, feed_of(sqlite_store), bind(settings.listen))
    app = create_app(settings_for(sqlite_store), sqlite_store, sweep=False, radius=radius)
    nas = Nas(radius.addresses[0], codec.dictionary())
    try:
        with TestClient(app) as client:
            api = Api(client, sqlite_store)
            api.post(
                "/v1/pools",
                {"name": "dyn", "kind": "dynamic", "prefixes": ["100.64.0.0/16"]},
            )
            nas.send(
                nas.packet(
                    1,
                    Acct_Status_Type="Start",
                    Acct_Session_Id="s-1",
                    User_Name="cust-1",
                    Framed_IP_Address="100.64.3.4",
                )
            )
            assert nas.answer(5) is not None  # answered: committed
            holders = api.call("GET", "/v1/accounts?address=100.64.3.4", role="viewer").json()
            assert [h["account"] for h in holders] == ["cust-1"]
            text = api.call("GET", "/metrics", role="viewer", expect=200).text
            assert 'edgectl_controller_radius_open_sessions{nas="bng-1"} 1' in text
            nas.send(
                nas.packet(
                    2,
                    Acct_Status_Type="Stop",
                    Acct_Session_Id="s-1",
                    User_Name="cust-1",
                    Framed_IP_Address="100.64.3.4",
                )
            )
            assert nas.answer(5) is not None
            # Nobody holds it now (404 since session history), and the history has the interval.
            api.call("GET", "/v1/accounts?address=100.64.3.4", role="viewer", expect=404)
            history = api.call("GET", "/v1/accounts/cust-1/history", role="viewer").json()
            [interval] = history["sessions"]
            assert interval["source"] == "bng-1" and interval["ended"] is not None
    finally:
        nas.close()
